"""``hmsa serve``: MLflow's own scoring server (``/invocations``, ``/ping``, ``/health``, the
request and reply formats of ``mlflow models serve``) behind a request-size limit.

MLflow's server reads any request body whole, then parses it, before the model can refuse
it (a 99 MB body costs seconds and gigabytes); here a body over the limit is refused from its
Content-Length header, before it is read. uvicorn runs ``hmsa.mlops.serving_app:app``; the model
and the limit come from the environment that ``serve`` sets.
"""

from __future__ import annotations

import json
import os

#: the environment variables ``serve`` passes to the uvicorn process
MODEL_VARIABLE, LIMIT_VARIABLE = "HMSA_SERVE_MODEL", "HMSA_SERVE_MAX_REQUEST_BYTES"


class BodyLimit:
    """ASGI middleware: 413 for a body larger than ``max_bytes``, 411 for a body without a
    Content-Length (it could not be measured before it is read), both before any of it is read."""

    def __init__(self, app, max_bytes: int, setting: str):
        self.app, self.max_bytes, self.setting = app, max_bytes, setting

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is None:
            if b"chunked" in headers.get(b"transfer-encoding", b""):
                return await _refuse(send, 411, "send the request with a Content-Length header (not chunked): its "
                                                "size is checked before it is read")
            return await self.app(scope, receive, send)
        if not length.isdigit() or int(length) > self.max_bytes:
            return await _refuse(send, 413, f"the request body is {int(length) if length.isdigit() else length!r} "
                                            f"bytes, over {self.setting} ({self.max_bytes:,} bytes): send fewer or "
                                            f"smaller images per request, or raise {self.setting}")
        return await self.app(scope, receive, send)


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error_code": "BAD_REQUEST" if status != 411 else "LENGTH_REQUIRED", "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _app():
    from mlflow.pyfunc import scoring_server

    from hmsa.mlops.serving import ServingLimits

    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_VARIABLE])
    logged = ServingLimits(**(model.model_config or {})).max_request_bytes
    limit = int(os.environ.get(LIMIT_VARIABLE) or logged)
    setting = "--max-request-bytes" if os.environ.get(LIMIT_VARIABLE) else "serving.max_request_bytes"
    return BodyLimit(scoring_server.init(model), limit, setting)


def serve(model_uri: str, host: str = "127.0.0.1", port: int = 5001, workers: int = 1,
          max_request_bytes: int | None = None) -> int:
    """Run the server in the foreground (uvicorn, ``workers`` processes); returns its exit status."""
    import subprocess
    import sys

    from mlflow.artifacts import download_artifacts

    local = download_artifacts(artifact_uri=model_uri)  # once, not in every worker
    env = {**os.environ, MODEL_VARIABLE: local}
    if max_request_bytes:
        env[LIMIT_VARIABLE] = str(max_request_bytes)
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "hmsa.mlops.serving_app:_app", "--host", host, "--port", str(port),
           "--workers", str(workers)]
    return subprocess.call(cmd, env=env)

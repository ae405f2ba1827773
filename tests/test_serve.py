"""`hmsa serve`: MLflow's scoring server behind a request-size limit, as a user starts it."""

import json

import mlflow
import numpy as np
import pytest

from tests.helpers import free_port, server, tiny_logged_model


@pytest.mark.slow
def test_hmsa_serve_answers_like_mlflow_and_refuses_a_large_body_before_reading_it(tmp_path, monkeypatch):
    """A body over the model's serving.max_request_bytes is a 413 from its Content-Length (MLflow's own
    server reads and parses any body whole first); a body without one is a 411; a good request
    is answered as `mlflow models serve` answers it; a float image is the model's 400."""
    import requests

    info = tiny_logged_model(tmp_path, monkeypatch, "hmsa-student", limits={"max_request_bytes": 200_000})
    mlflow.MlflowClient().set_registered_model_alias("hmsa-student", "champion", str(info["version"]))
    image = np.random.default_rng(0).integers(0, 255, (1, 40, 72, 3), dtype=np.uint8)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server(["hmsa", "serve", "--port", str(port), "--tracking-uri", mlflow.get_tracking_uri()], f"{url}/ping",
                tmp_path, tmp_path / "serve.log", timeout=180):
        good = requests.post(f"{url}/invocations", json={"inputs": image.tolist()}, timeout=120)
        big = requests.post(f"{url}/invocations", data=json.dumps({"inputs": [image.tolist()] * 20}),
                            headers={"Content-Type": "application/json"}, timeout=120)
        chunked = requests.post(f"{url}/invocations", data=iter([json.dumps({"inputs": image.tolist()}).encode()]),
                                headers={"Content-Type": "application/json"}, timeout=120)
        floats = requests.post(f"{url}/invocations", json={"inputs": (image / 255).tolist()}, timeout=120)
    assert good.status_code == 200, good.text[:2000]
    local = mlflow.pyfunc.load_model("models:/hmsa-student@champion").predict(image)
    assert np.array_equal(np.asarray(good.json()["predictions"], dtype=np.uint8), local)
    assert big.status_code == 413, big.text[:500]
    assert "over serving.max_request_bytes (200,000 bytes)" in big.json()["message"]
    assert chunked.status_code == 411 and "Content-Length" in chunked.json()["message"]
    assert floats.status_code == 400 and "multiply by 255" in floats.json()["message"]


def test_hmsa_serve_names_a_model_that_is_not_there(tmp_path, monkeypatch, capsys):
    from hmsa.commands import predict
    tiny_logged_model(tmp_path, monkeypatch, "hmsa-student")
    assert predict.main(["serve", "--tracking-uri", mlflow.get_tracking_uri()]) == 2
    err = capsys.readouterr().err
    assert "hmsa serve: error: --model models:/hmsa-student@champion: hmsa-student has no alias 'champion'" in err

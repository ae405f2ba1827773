"""``python -m hmsa.mlops.remote``: can this clone use its DVC remote? (``make pull`` and ``make push`` ask first.)

DVC reports an unreachable remote as missing cache files on ``dvc pull`` and as a bare
"Connection refused" on ``dvc push``, naming neither the remote nor what to do. This check
asks DVC's own file system for the remote's folder and, when that fails, says which remote,
at which url, failed how, and the command that fixes it. It reads and writes nothing else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class RemoteError(RuntimeError):
    """The DVC remote cannot be used; the message names it and says what to do."""


def _how(name: str) -> str:
    return (f"dvc remote modify --local {name} url <url>, e.g. webdav://dvc.example.org/hmsa (and dvc remote modify "
            f"--local {name} user / password for a server that asks), or commit the team's url to .dvc/config "
            "(docs/team-remote.md)")


def check(root: Path | str = ".", name: str | None = None) -> str:
    """The url of remote ``name`` (the default remote when None), once DVC has read its
    folder; otherwise a RemoteError that names the remote and says what to do."""
    from dvc.repo import Repo

    from hmsa.mlops.tracking import without_credentials

    with Repo(str(root)) as repo:
        name = name or repo.config["core"].get("remote")
        if not name or name not in repo.config["remote"]:
            raise RemoteError(f"This clone has no DVC remote {name or ''}: dvc remote add --local -d team <url>, "
                              "e.g. webdav://dvc.example.org/hmsa (docs/team-remote.md).")
        url = without_credentials(str(repo.config["remote"][name]["url"]))
        remote = repo.cloud.get_remote(name)
        if remote.fs.protocol == "local" and Path(remote.path).is_file():  # .dvc/config's placeholder
            raise RemoteError(f"DVC remote {name!r} is not set up in this clone (its url is the page that says how, "
                              f"{url}): {_how(name)}.")
        try:
            remote.fs.info(remote.path)  # raises where exists() would quietly say False
        except FileNotFoundError:
            raise RemoteError(f"DVC remote {name!r} ({url}) answers, but its folder does not exist: create it on the "
                              "server (an empty folder), or point the url at one that does.") from None
        except Exception as err:  # whatever the file system raises: connection, authentication, TLS, DNS
            reason = without_credentials(f"{type(err).__name__}: {err}")[:400]
            raise RemoteError(
                f"DVC remote {name!r} ({url}) cannot be used: {reason}. Check that the server runs and the url "
                f"is right (dvc remote modify --local {name} url <url>), and the credentials "
                f"(dvc remote modify --local {name} user <user>, then ... password <password>)."
            ) from None
    return url


def main(argv: list[str] | None = None) -> int:
    """Check the remote; print its url, or the problem and what to do (exit status 2)."""
    parser = argparse.ArgumentParser(prog="python -m hmsa.mlops.remote", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--remote", default=None, help="the remote to check (default: the default remote)")
    args = parser.parse_args(argv)
    try:
        url = check(".", args.remote)
    except RemoteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"DVC remote ok: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

import subprocess

from hmsa.mlops import provenance
from tests.helpers import run


def test_dvc_hash_equals_what_dvc_add_records(tmp_path):
    data = tmp_path / "d"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("a\n")
    (data / "sub" / "b.bin").write_bytes(bytes(range(256)))
    run(["git", "init", "-q"], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    run(["dvc", "add", "-q", "d"], tmp_path)
    recorded = (tmp_path / "d.dvc").read_text()
    assert f"md5: {provenance.dvc_hash(data)}" in recorded
    assert provenance.dvc_hash(data).endswith(".dir")


def test_git_commit_is_none_outside_git_and_marks_dirty_trees(tmp_path):
    assert provenance.git_commit(tmp_path) is None
    run(["git", "init", "-q"], tmp_path)
    (tmp_path / "f.txt").write_text("1")
    run(["git", "add", "f.txt"], tmp_path)
    run(["git", "commit", "-qm", "one"], tmp_path)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert provenance.git_commit(tmp_path) == sha
    (tmp_path / "f.txt").write_text("2")
    assert provenance.git_commit(tmp_path) == f"{sha}-dirty"

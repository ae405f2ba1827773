"""Whole-or-nothing file writes, full disks, and manifest paths kept inside their root."""

import errno
import os

import pytest

from hmsa.fileio import DiskFullError, OutsideRootError, atomic_path, under


def test_a_failing_writer_leaves_the_previous_file(tmp_path):
    target = tmp_path / "out.json"
    with atomic_path(target) as tmp:
        tmp.write_text("good")
    with pytest.raises(RuntimeError, match="writer broke"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer broke")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    with atomic_path(target) as tmp:
        tmp.write_text("good")
    with pytest.raises(DiskFullError) as err, atomic_path(target) as tmp:
        tmp.write_text("ha")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(target) in str(err.value) and "free some space" in str(err.value)
    assert err.value.errno == errno.ENOSPC
    assert target.read_text() == "good" and [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_other_os_errors_pass_unchanged(tmp_path):
    with pytest.raises(PermissionError), atomic_path(tmp_path / "x") as _:
        raise PermissionError(errno.EACCES, "denied")


def test_manifest_paths_stay_inside_their_root(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", root / "a" / "link.png")
    assert under(root, "a/img.png") == (root / "a" / "img.png").resolve()
    for bad in ("../secret", "a/../../secret", str(tmp_path / "secret"), "a/link.png"):
        with pytest.raises(OutsideRootError, match="outside its data root"):
            under(root, bad)

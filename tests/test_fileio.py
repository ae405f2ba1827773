"""Whole-or-nothing file writes, full disks, and manifest paths kept inside their root."""

import errno
import os

import pytest

from hmsa.io.files import DiskFullError, OutsideRootError, atomic_path, under


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


def test_a_stamped_folder_is_rebuilt_only_when_its_stamp_changes_and_a_foreign_one_is_refused(tmp_path):
    from hmsa.io.files import is_stamped, rebuild_stamped

    root, calls = tmp_path / "tree", []

    def fill(tmp):
        calls.append(tmp)
        (tmp / "a.txt").write_text(str(len(calls)))
        return len(calls)

    assert rebuild_stamped(root, "stamp.json", {"v": 1}, fill, "a tree", "paths.tree") == (True, 1)
    assert is_stamped(root, "stamp.json", {"v": 1}) and not is_stamped(root, "stamp.json", {"v": 2})
    assert rebuild_stamped(root, "stamp.json", {"v": 1}, fill, "a tree", "paths.tree") == (False, None)
    assert rebuild_stamped(root, "stamp.json", {"v": 2}, fill, "a tree", "paths.tree") == (True, 2)
    assert (root / "a.txt").read_text() == "2"

    def broken(tmp):
        (tmp / "a.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rebuild_stamped(root, "stamp.json", {"v": 3}, broken, "a tree", "paths.tree")
    assert (root / "a.txt").read_text() == "2" and is_stamped(root, "stamp.json", {"v": 2})  # the old build stays

    foreign = tmp_path / "mine"
    foreign.mkdir()
    with pytest.raises(FileExistsError, match=r"not a tree \(no stamp.json\).*Point paths.tree at another folder"):
        rebuild_stamped(foreign, "stamp.json", {"v": 1}, fill, "a tree", "paths.tree")
    assert list(foreign.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["mine", "tree"]

"""repro.atomic: files written atomically get the permission bits a plain open() gives."""
import os
import stat

import pytest

from repro.atomic import atomic_write_bytes, atomic_write_text, write_json


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_follows_the_umask_like_open(tmp_path, umask, expected):
    previous = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        with open(plain, "w") as f:
            f.write("x")
        atomic_write_text(tmp_path / "result.txt", "x")
        write_json(tmp_path / "result.json", {"a": 1})
        # replacing an existing file: the new one also takes the umask's mode
        atomic_write_text(tmp_path / "result.txt", "y")
    finally:
        os.umask(previous)
    assert mode(plain) == expected
    assert mode(tmp_path / "result.txt") == expected
    assert mode(tmp_path / "result.json") == expected
    assert (tmp_path / "result.txt").read_text() == "y"


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "checkpoint.bin"
    atomic_write_bytes(target, lambda f: f.write(b"old"))

    def crash(f):
        f.write(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(target, crash)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.bin"]

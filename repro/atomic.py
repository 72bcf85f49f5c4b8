"""Atomic file writes (no torch needed): write a temporary file in the same folder, fsync it,
rename it over the target with os.replace. A crash or a kill mid-write leaves the previous file
(or none) in place, never a half-written one. The file gets the mode a plain open() gives
(0644 under the usual umask 022), so results on a shared disk or a bind mount stay readable by
others. repro.checkpoint re-exports these."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new, exclusively created file beside `path`. Created with mode 0o666 so that the kernel
    applies the process umask exactly as for open(path, "w"); tempfile.mkstemp would fix it at 0600."""
    for _ in range(100):
        tmp = os.path.join(path.parent, f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write_bytes(path: Path, write) -> None:
    """Call write(file_object) on a temporary file beside `path`, fsync it, rename it into place."""
    path = Path(path)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")

"""Every file the package writes goes through here: atomic, crash-safe, never half-written.

A write goes to a uniquely named temporary file in the destination's folder (so two processes
never share one), is flushed and fsynced, renamed over the destination (``os.replace`` is
atomic on POSIX and Windows), and the folder is fsynced so the rename itself survives a power
cut. A kill at any moment leaves the old file or the new one, and no temporary behind.

Reading untrusted files: :func:`load_torch` is ``torch.load(..., weights_only=True)`` with a
one-line error for a file that carries pickled objects (it is refused, never executed).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from metanb.errors import MetanbError


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read from /proc where possible (os.umask would race threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a binary temporary file, then move it to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_torch(path: str | Path, obj: Any) -> Path:
    """``torch.save`` to ``path`` atomically (tensors, dicts, lists and plain values only)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def append_line(path: str | Path, line: str) -> None:
    """Append one line and fsync: a kill leaves at worst a torn last line, which readers skip."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_torch(path: str | Path, map_location: str = "cpu") -> Any:
    """``torch.load`` that never unpickles objects: a file carrying any is refused in one line."""
    import pickle

    import torch

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MetanbError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MetanbError(
            f"refusing {path}: it holds pickled objects, not only tensors and plain values "
            f"({first[:160]}); only files written by metanb or torch.save of tensors load"
        ) from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise MetanbError(f"{path} is not a readable torch file ({str(e)[:160]})") from None

"""Fetch a published data file once, verified by its pinned sha256, never half-written.

A download goes to a temporary file next to ``dest``; its digest is checked *before* the
atomic rename, so ``dest`` only ever holds a complete file with the expected content. An
existing ``dest`` with the right digest is returned without touching the network, which makes
every call a cache hit after the first. ``urllib.request`` serves ``http(s)://`` and
``file://`` alike (tests use the latter and a loopback server).
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import IO

from metanb.errors import MetanbError
from metanb.io import atomic_write

_CHUNK = 1 << 16
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (archives can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_digest(sha256: str | None, url: str) -> str:
    """A fetch without a real pinned digest would trust whatever the server sends: refuse."""
    digest = (sha256 or "").strip().lower()
    if not _SHA256.fullmatch(digest):
        raise MetanbError(
            f"refusing to download {url}: no valid pinned sha256 (got {sha256!r}); pin the "
            "64-hex-digit digest of the published file first"
        )
    return digest


def fetch(
    url: str,
    dest: str | Path,
    sha256: str,
    *,
    desc: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` unless a file with digest ``sha256`` is already there."""
    digest = _check_digest(sha256, url)
    dest = Path(dest)
    if dest.is_file() and sha256_file(dest) == digest:
        return dest

    def write(out: IO[bytes]) -> None:
        # raising here makes atomic_write delete its temporary: dest never sees bad bytes
        got = _download(url, out, desc=desc or dest.name, progress=progress, timeout=timeout)
        if got != digest:
            raise MetanbError(
                f"{dest.name} downloaded from {url} has sha256 {got}, expected {digest}; "
                "the file was not kept"
            )

    return atomic_write(dest, write)


def _download(url: str, out: IO[bytes], *, desc: str, progress: bool, timeout: float) -> str:
    """Stream ``url`` into ``out`` with a tqdm bar; return the sha256 of what was received."""
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (URLs are pinned)
            length = resp.headers.get("Content-Length") if resp.headers else None
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=desc, disable=not progress
            ) as bar:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise MetanbError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise MetanbError(f"cannot download {url}: {e.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as e:  # timeouts, resets, cut-offs
        raise MetanbError(f"cannot download {url}: {str(e) or type(e).__name__}") from None
    return h.hexdigest()


def _safe_member_name(member: str) -> str:
    """A member path that stays inside the archive's root (no absolute path, no '..')."""
    p = PurePosixPath(member)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise MetanbError(f"refusing archive member {member!r}: it escapes the archive root")
    return str(p)


def extract_tar_member(archive: str | Path, member: str, dest: str | Path) -> Path:
    """Copy one regular file ``member`` out of a tar archive to ``dest`` (atomically).

    Only the named member is read, and it must be a plain file: links, devices and names that
    climb out of the archive are refused, so a hostile archive cannot write elsewhere.
    """
    archive, dest = Path(archive), Path(dest)
    name = _safe_member_name(member)
    try:
        with tarfile.open(archive, "r:*") as tar:
            info = _find_member(tar, name)
            if info is None:
                raise MetanbError(f"{archive.name} has no member {member!r}")
            if not info.isfile():
                raise MetanbError(f"refusing {member!r} in {archive.name}: not a regular file")
            src = tar.extractfile(info)
            if src is None:  # pragma: no cover - isfile() members always have data
                raise MetanbError(f"cannot read {member!r} from {archive.name}")
            with src:
                atomic_write(dest, lambda f: shutil.copyfileobj(src, f, _CHUNK))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise MetanbError(f"cannot read {archive}: {str(e) or type(e).__name__}") from None
    return dest


def _find_member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo | None:
    """The member called ``name`` (ignoring a leading './'), last one wins as in tar."""
    found = None
    for info in tar:
        if str(PurePosixPath(info.name.removeprefix("./"))) == name:
            found = info
    return found

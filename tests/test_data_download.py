"""fetch: cached, verified before rename, one-line errors; extract_tar_member: no traversal."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from metanb.data.download import extract_tar_member, fetch, sha256_file
from metanb.errors import MetanbError

PAYLOAD = b"1 your persona: i like cats.\n" * 1000
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src" / "data.txt"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    return src


class _Server(http.server.ThreadingHTTPServer):
    hits = 0


@pytest.fixture
def server(source: Path) -> Iterator[tuple[str, _Server]]:
    """A loopback HTTP server for the source folder that counts GETs; stopped after the test."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(source.parent), **kw)

        def log_message(self, *a) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            httpd.hits += 1
            if self.path == "/truncated":  # promises the whole payload, sends 10 bytes, hangs up
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD[:10])
                self.close_connection = True
                return
            super().do_GET()

    httpd = _Server(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=5)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_file_url_download_verifies_and_caches(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "data.txt"
    assert fetch(source.as_uri(), dest, DIGEST, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and sha256_file(dest) == DIGEST
    source.unlink()  # a second call must not need the source at all
    assert fetch(source.as_uri(), dest, DIGEST.upper(), progress=False) == dest
    assert _leftovers(dest.parent) == []


def test_http_download_then_cache_hit_makes_no_request(
    server: tuple[str, _Server], tmp_path: Path
) -> None:
    url, httpd = server
    dest = tmp_path / "data.txt"
    for _ in range(3):
        fetch(f"{url}/data.txt", dest, DIGEST, progress=False, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert httpd.hits == 1
    dest.write_bytes(b"stale")  # a wrong file at dest is downloaded again and replaced
    fetch(f"{url}/data.txt", dest, DIGEST, progress=False, timeout=5)
    assert dest.read_bytes() == PAYLOAD and httpd.hits == 2
    assert _leftovers(tmp_path) == []


def test_mismatch_leaves_nothing_and_names_both_digests(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "data.txt"
    wrong = "0" * 64
    with pytest.raises(MetanbError) as e:
        fetch(source.as_uri(), dest, wrong, progress=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert "data.txt" in msg and wrong in msg and DIGEST in msg
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == [source.parent]


def test_mismatch_keeps_the_previous_file(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "data.txt"
    dest.write_bytes(b"old")
    with pytest.raises(MetanbError):
        fetch(source.as_uri(), dest, "1" * 64, progress=False)
    assert dest.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("digest", ["", None, "abc", "g" * 64, "0" * 63])
def test_refuses_without_a_real_digest(source: Path, tmp_path: Path, digest: str | None) -> None:
    with pytest.raises(MetanbError, match=r"^refusing to download .*no valid pinned sha256"):
        fetch(source.as_uri(), tmp_path / "x", digest, progress=False)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_http_404_is_one_line_naming_the_url(
    server: tuple[str, _Server], tmp_path: Path
) -> None:
    url = f"{server[0]}/missing.txt"
    with pytest.raises(MetanbError) as e:
        fetch(url, tmp_path / "m", DIGEST, progress=False, timeout=5)
    assert str(e.value) == f"cannot download {url}: HTTP 404 File not found"
    assert list(tmp_path.iterdir()) == [tmp_path / "src"]


def test_cut_off_download_is_never_kept(server: tuple[str, _Server], tmp_path: Path) -> None:
    url = f"{server[0]}/truncated"
    with pytest.raises(MetanbError) as e:
        fetch(url, tmp_path / "data.txt", DIGEST, progress=False, timeout=5)
    assert "\n" not in str(e.value) and url in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_unreachable_host_is_one_line(tmp_path: Path) -> None:
    # port 9 on loopback: nothing listens, so the connection is refused at once
    url = "http://127.0.0.1:9/x.tgz"
    with pytest.raises(MetanbError, match=r"^cannot download http://127\.0\.0\.1:9/x\.tgz: ") as e:
        fetch(url, tmp_path / "x.tgz", DIGEST, progress=False, timeout=2)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "x.tgz").exists()


def test_missing_file_url(tmp_path: Path) -> None:
    url = (tmp_path / "nope.txt").as_uri()
    with pytest.raises(MetanbError, match=rf"^cannot download {url}: "):
        fetch(url, tmp_path / "out.txt", DIGEST, progress=False)


def _tar(path: Path, members: dict[str, bytes], *, links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def test_extract_member(tmp_path: Path) -> None:
    arch = _tar(
        tmp_path / "a.tgz",
        {"personachat/train_self_original.txt": b"train", "./personachat/valid.txt": b"valid"},
    )
    out = extract_tar_member(arch, "personachat/train_self_original.txt", tmp_path / "o" / "t.txt")
    assert out.read_bytes() == b"train"
    # a './' prefix in the archive is the same member
    valid = extract_tar_member(arch, "personachat/valid.txt", tmp_path / "v")
    assert valid.read_bytes() == b"valid"


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/passwd", "a/../../evil.txt", ""])
def test_extract_refuses_traversal(tmp_path: Path, member: str) -> None:
    arch = _tar(tmp_path / "a.tgz", {"../evil.txt": b"x", "ok.txt": b"y"})
    with pytest.raises(MetanbError, match="escapes the archive root"):
        extract_tar_member(arch, member, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_extract_refuses_links_and_missing(tmp_path: Path) -> None:
    arch = _tar(tmp_path / "a.tgz", {"ok.txt": b"y"}, links={"link.txt": "/etc/passwd"})
    with pytest.raises(MetanbError, match=r"^refusing 'link.txt' in a.tgz: not a regular file$"):
        extract_tar_member(arch, "link.txt", tmp_path / "out")
    with pytest.raises(MetanbError, match=r"^a.tgz has no member 'nope.txt'$"):
        extract_tar_member(arch, "nope.txt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extract_corrupt_archive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"not a tar")
    with pytest.raises(MetanbError, match=r"^cannot read .*bad\.tgz: "):
        extract_tar_member(bad, "x", tmp_path / "out")

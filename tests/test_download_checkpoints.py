"""The checkpoint downloader on small files served from 127.0.0.1: naming, checksums, resume, mirror."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nola.train import download

BLOB = bytes(range(256)) * 400 + b"tail"  # 102,404 bytes
NAMES = {
    "gpt2": "gpt2-pytorch_model.bin",
    "gpt2-medium": "gpt2-medium-pytorch_model.bin",
    "gpt2-large": "gpt2-large-pytorch_model.bin",
}


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours Range when ``server.honour_range``; can drop mid-body."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        wanted = self.headers.get("Range")
        if wanted and server.honour_range:
            start = int(wanted.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if server.drop_after is not None:
            self.wfile.write(payload[: server.drop_after])
            self.wfile.flush()
            return  # HTTP/1.0: the connection closes short of Content-Length
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.honour_range, httpd.drop_after = {}, [], True, None
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _registry(tmp_path, base: str, sums: dict[str, str | None]):
    """A sources file whose checkpoints point at the test server (one blob per model)."""
    entries = {
        model: {"path": f"pretrained_checkpoints/{NAMES[model]}", "url": f"{base}/{model}.bin", "sha256": sha}
        for model, sha in sums.items()
    }
    path = tmp_path / "sources.json"
    path.write_text(json.dumps({"vocab": {}, "data": {}, "checkpoints": entries}))
    return path


def _run(sources, root, *models, env_extra=None):
    """Run the real shell wrapper; return (exit code, stdout + stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "NOLA_DATA_MIRROR"}
    env.update(env_extra or {}, PYTHON=sys.executable)
    script = os.path.join(os.path.dirname(__file__), "..", "download_pretrained_checkpoints.sh")
    proc = subprocess.run(
        ["bash", script, "--sources", str(sources), "--root", str(root), *models],
        capture_output=True, text=True, env=env, timeout=60,
    )
    return proc.returncode, proc.stdout + proc.stderr


SHA = hashlib.sha256(BLOB).hexdigest()


def test_downloads_the_requested_models_under_the_paper_names(server, tmp_path):
    for model in NAMES:
        server.files[f"/{model}.bin"] = BLOB
    sources = _registry(tmp_path, server.base, {m: SHA for m in NAMES})
    code, out = _run(sources, tmp_path, "gpt2-medium")
    assert code == 0, out
    folder = tmp_path / "pretrained_checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["gpt2-medium-pytorch_model.bin"]
    assert (folder / "gpt2-medium-pytorch_model.bin").read_bytes() == BLOB
    assert [path for path, _ in server.requests] == ["/gpt2-medium.bin"]
    code, out = _run(sources, tmp_path)  # no names: all three; medium is present and verified
    assert code == 0, out
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES.values())
    assert sorted(path for path, _ in server.requests) == ["/gpt2-large.bin", "/gpt2-medium.bin", "/gpt2.bin"]
    assert "gpt2-medium: present and verified" in out


def test_resumes_a_partial_file_with_a_range_request(server, tmp_path):
    server.files["/gpt2.bin"] = BLOB
    part = tmp_path / "pretrained_checkpoints" / "gpt2-pytorch_model.bin.part"
    part.parent.mkdir()
    part.write_bytes(BLOB[:1000])
    code, out = _run(_registry(tmp_path, server.base, {"gpt2": SHA}), tmp_path, "gpt2")
    assert code == 0, out
    assert server.requests == [("/gpt2.bin", "bytes=1000-")]
    assert (part.parent / "gpt2-pytorch_model.bin").read_bytes() == BLOB
    assert not part.exists()


def test_dropped_connection_keeps_the_part_file_then_resumes(server, tmp_path):
    server.files["/gpt2-large.bin"] = BLOB
    server.drop_after = 40_000
    sources = _registry(tmp_path, server.base, {"gpt2-large": SHA})
    code, out = _run(sources, tmp_path, "gpt2-large")
    final = tmp_path / "pretrained_checkpoints" / "gpt2-large-pytorch_model.bin"
    assert code == 1
    assert "gpt2-large" in out and "resume" in out and "Traceback" not in out
    assert not final.exists()
    assert final.with_name(final.name + ".part").stat().st_size == 40_000
    server.drop_after = None
    code, out = _run(sources, tmp_path, "gpt2-large")
    assert code == 0, out
    assert server.requests[-1] == ("/gpt2-large.bin", "bytes=40000-")
    assert final.read_bytes() == BLOB


def test_server_ignoring_range_restarts_the_file(server, tmp_path):
    server.files["/gpt2.bin"] = BLOB
    server.honour_range = False
    part = tmp_path / "pretrained_checkpoints" / "gpt2-pytorch_model.bin.part"
    part.parent.mkdir()
    part.write_bytes(b"x" * 500)
    code, out = _run(_registry(tmp_path, server.base, {"gpt2": SHA}), tmp_path, "gpt2")
    assert code == 0, out
    assert (part.parent / "gpt2-pytorch_model.bin").read_bytes() == BLOB


def test_corrupt_download_leaves_no_file_and_names_the_model(server, tmp_path):
    server.files["/gpt2.bin"] = BLOB
    server.files["/gpt2-large.bin"] = BLOB[:-1] + b"X"
    code, out = _run(_registry(tmp_path, server.base, {"gpt2": SHA, "gpt2-large": SHA}), tmp_path)
    assert code == 1
    assert "gpt2-large" in out and "checksum mismatch" in out and "failed: gpt2-large" in out
    assert sorted(p.name for p in (tmp_path / "pretrained_checkpoints").iterdir()) == ["gpt2-pytorch_model.bin"]


def test_http_error_and_unknown_model(server, tmp_path):
    sources = _registry(tmp_path, server.base, {"gpt2": SHA})
    code, out = _run(sources, tmp_path, "gpt2")
    assert code == 1 and "gpt2: " in out and "HTTP 404" in out
    assert not (tmp_path / "pretrained_checkpoints" / "gpt2-pytorch_model.bin").exists()
    code, out = _run(sources, tmp_path, "gpt3")
    assert code == 2 and "unknown checkpoints gpt3" in out and "Traceback" not in out


def test_present_but_corrupt_file_is_fetched_again(server, tmp_path):
    server.files["/gpt2.bin"] = BLOB
    final = tmp_path / "pretrained_checkpoints" / "gpt2-pytorch_model.bin"
    final.parent.mkdir()
    final.write_bytes(b"truncated")
    code, out = _run(_registry(tmp_path, server.base, {"gpt2": SHA}), tmp_path, "gpt2")
    assert code == 0, out
    assert "fails its checksum" in out
    assert final.read_bytes() == BLOB


def test_unpinned_checksum_is_computed_and_printed(server, tmp_path):
    server.files["/gpt2.bin"] = BLOB
    code, out = _run(_registry(tmp_path, server.base, {"gpt2": None}), tmp_path, "gpt2")
    assert code == 0, out
    assert f"sha256 {SHA} (not pinned" in out


def test_mirror_is_copied_and_verified_without_network(server, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "pretrained_checkpoints").mkdir(parents=True)
    (mirror / "pretrained_checkpoints" / "gpt2-pytorch_model.bin").write_bytes(BLOB)
    (mirror / "pretrained_checkpoints" / "gpt2-medium-pytorch_model.bin").write_bytes(b"corrupt")
    server.files.update({f"/{m}.bin": BLOB for m in NAMES})
    sources = _registry(tmp_path, server.base, {m: SHA for m in NAMES})
    root = tmp_path / "root"
    code, out = _run(sources, root, env_extra={"NOLA_DATA_MIRROR": str(mirror)})
    assert code == 1
    assert server.requests == []
    folder = root / "pretrained_checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["gpt2-pytorch_model.bin"]
    assert (folder / "gpt2-pytorch_model.bin").read_bytes() == BLOB
    assert "gpt2-medium: the mirror copy" in out and "gpt2-large: not in the mirror" in out


def test_registry_names_the_three_paper_checkpoints():
    checkpoints = download.load_sources()["checkpoints"]
    assert {k: s.path for k, s in checkpoints.items()} == {m: f"pretrained_checkpoints/{n}" for m, n in NAMES.items()}
    for source in checkpoints.values():
        assert source.url.startswith("https://huggingface.co/openai-community/")
        assert len(source.sha256) == 64 and int(source.sha256, 16) >= 0

"""Images given as http(s) URLs, served from 127.0.0.1: fetched with a timeout and a size cap, cached on
disk (a rerun does not fetch again), failures one line on the sample; the processor reads
`<img>http://...</img>` as the reference does."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import pytest
import torch
from fixtures.catalog import DATA

from evalkit.data import remote
from evalkit.data.images import to_image_ref
from evalkit.task import ImageError

IMAGE = DATA / "coco" / "val2014" / "COCO_val2014_000000001005.jpg"


class Handler(http.server.BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        if self.path.startswith("/slow"):
            time.sleep(0.5)
        if self.path.startswith(("/a.jpg", "/slow")):
            body = IMAGE.read_bytes()
        elif self.path.startswith("/big"):
            body = b"\xff" * 5000
        else:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_IMAGE_CACHE", str(tmp_path / "cache"))
    Handler.hits = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_url_image_is_fetched_once_and_cached(server, tmp_path):
    url = f"{server}/a.jpg"
    ref = to_image_ref(url, image_root="/somewhere/else")  # a URL is never joined to the image root
    assert ref.load().tobytes() == to_image_ref(str(IMAGE)).load().tobytes()
    assert to_image_ref({"path": url, "bytes": None}).load().size == ref.load().size
    assert Handler.hits == {"/a.jpg": 1}  # three decodes, one fetch: the rest came from the disk cache
    assert len(list(Path(tmp_path / "cache").iterdir())) == 1


@pytest.mark.parametrize(("path", "expected"), [("/missing.jpg", "HTTP 404"), ("/big.jpg", "limit"),
                                                ("/slow.jpg", "timeout")])
def test_url_failures_are_one_line(server, monkeypatch, path, expected):
    monkeypatch.setattr(remote, "MAX_BYTES", 1000)
    monkeypatch.setattr(remote, "TIMEOUT_S", 0.1)
    with pytest.raises(ImageError) as err:
        to_image_ref(f"{server}{path}").load()
    assert expected in str(err.value) and "\n" not in str(err.value) and path in str(err.value)
    assert not any(remote.cache_dir().glob("*")) if remote.cache_dir().exists() else True


def test_processor_reads_urls_in_img_tags(server, tiny_processor):
    url = f"{server}/a.jpg"
    batch = tiny_processor(text=f"<img>{url}</img>What is it?")
    local = tiny_processor(text=f"<img>{IMAGE}</img>What is it?")
    assert torch.equal(batch["pixel_values"], local["pixel_values"])

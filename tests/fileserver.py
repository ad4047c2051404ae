"""A local HTTP file server for the download tests (127.0.0.1 only) and a generated UC Merced-like zip.

The server answers GET with the file's bytes, honours `Range: bytes=N-` with 206, can ignore Range
(`honour_range=False`) and can cut the connection after `drop_after` bytes of the first answer.
Every request's Range header is recorded in `requests`.
"""
from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

from roma.data.check import UCM_CLASSES


class FileServer:
    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.requests: list[str | None] = []
        self.honour_range = True
        self.drop_after: int | None = None  # bytes sent before the first answer is cut short
        self._dropped = False

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


def _handler(server: FileServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):  # noqa: N802 - http.server's name
            name = self.path.lstrip("/")
            rng = self.headers.get("Range")
            server.requests.append(rng)
            data = server.files.get(name)
            if data is None:
                self.send_error(404, "not found")
                return
            start = 0
            if rng and server.honour_range:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if server.drop_after is not None and not server._dropped:
                server._dropped = True
                self.wfile.write(body[:server.drop_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@contextmanager
def serve(files: dict[str, bytes]):
    server = FileServer(files)
    server.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    t = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def ucm_like_zip(per_class: int = 4, size: int = 32) -> bytes:
    """UCMerced_LandUse/Images/<class>/<class>NN.tif for UC Merced's 21 classes, tiny and distinct."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, c in enumerate(sorted(UCM_CLASSES)):
            for i in range(per_class):
                img = Image.new("RGB", (size, size), (k * 12 % 256, i * 40 % 256, 128))
                for x in range(0, size, 4):  # a class-dependent texture so that the probe has signal
                    for y in range(0, size, 2 + k % 5):
                        img.putpixel((x, y), (255, 255 - k * 10, i * 7 % 256))
                b = io.BytesIO()
                img.save(b, format="TIFF")
                zf.writestr(f"UCMerced_LandUse/Images/{c}/{c}{i:02d}.tif", b.getvalue())
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path

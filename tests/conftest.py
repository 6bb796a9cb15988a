"""Shared fixtures: a local HTTP server standing in for the CMD file server."""

from __future__ import annotations

import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def smoke_config(**changes):
    """config/smoke.yaml as a dict, with nested changes given as dotted keys."""
    config = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return config

# --------------------------------------------------------------------------------------------
# a small local HTTP server with Range support, 404s and a one-time connection drop.
# Serve a file by putting its bytes in state.files['/path']; state.base is the server's URL.
# --------------------------------------------------------------------------------------------


class _State:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before dropping (first request)
        self.ignore_range = False
        self.requests: list[tuple[str, dict]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    state: _State  # set on a per-server subclass

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        st = self.state
        with st.lock:
            st.requests.append((self.path, dict(self.headers)))
            drop = st.drop_after.pop(self.path, None)
        data = st.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        rng = self.headers.get("Range")
        partial = False
        if rng and not st.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            assert m, rng
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            partial = True
        body = data[start:]
        self.send_response(206 if partial else 200)
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if drop is not None:
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    state = _State()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)



"""A small HTTP server on 127.0.0.1 for tests that download things.

Downloads fail in ways that are hard to reproduce against real servers (a connection dropped
halfway, a server that ignores Range, one that never answers, an HTML page instead of a file), so
each path here is served by a `Route` that says how to misbehave. Every request is recorded with
its headers, so a test can check what the client asked for (e.g. that a resume sent `Range`).

Use `serve({...})` as a context manager, or the `http_server` fixture from conftest.py.
"""
from __future__ import annotations

import re
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Google Drive - Virus scan warning</title></head>"
             b"<body>Google Drive can't scan this file for viruses.</body></html>\n")


@dataclass
class Route:
    """How one path answers. The defaults are a well-behaved server that honours Range.

    body: the file's bytes. status: anything but 200 answers every request with that status.
    ranges: False ignores Range headers (always 200 and the whole body).
    drop_first: the first N requests get half of the body, then the connection is closed.
    fail_first: the first N requests get 500 before normal service resumes.
    stall: seconds to wait before answering (or, with stall_midway, after half the body).
    misresume: answer a Range request from this many bytes before the offset asked for, saying so
    in Content-Range (a buggy proxy or a file that changed between requests).
    stall_skip: the first N requests are answered at once, only later ones stall.
    content_type None, length False, content_range False: leave that header out (servers that do:
    a body then ends when the connection closes).
    hang_up: close the connection without answering at all.
    """

    body: bytes = b""
    content_type: str | None = "application/octet-stream"
    status: int = 200
    ranges: bool = True
    drop_first: int = 0
    fail_first: int = 0
    stall: float = 0.0
    stall_midway: bool = False
    misresume: int = 0
    stall_skip: int = 0
    length: bool = True
    content_range: bool = True
    hang_up: bool = False

    @classmethod
    def html(cls, body: bytes = HTML_PAGE, content_type: str = "text/html; charset=utf-8") -> Route:
        """A page like the one Google Drive serves when a download needs confirmation."""
        return cls(body=body, content_type=content_type)


@dataclass(frozen=True)
class Request:
    """One request as the server saw it (header names as sent)."""

    path: str
    headers: dict[str, str]


class LocalServer:
    """Serves `routes` (path -> Route or plain bytes) on a free port in a background thread."""

    def __init__(self, routes: dict[str, Route | bytes]):
        self.routes = {path: r if isinstance(r, Route) else Route(body=r) for path, r in routes.items()}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def requests_for(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def start(self) -> LocalServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Wake stalled handlers first so shutting down never waits for a stall to run out."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _record(self, path: str, headers: dict[str, str]) -> int:
        """Log the request; return how many earlier requests this path had (for *_first modes)."""
        with self._lock:
            earlier = sum(r.path == path for r in self.requests)
            self.requests.append(Request(path, headers))
            return earlier

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)


@contextmanager
def serve(routes: dict[str, Route | bytes]) -> Iterator[LocalServer]:
    """Run a LocalServer for the duration of the `with` block."""
    server = LocalServer(routes).start()
    try:
        yield server
    finally:
        server.stop()


def closed_port_url(path: str = "/file.zip") -> str:
    """A URL on 127.0.0.1 where nothing listens, to test 'connection refused' (offline) handling."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: LocalServer

    def handle_error(self, request, client_address) -> None:
        """Clients hanging up early is what several modes provoke; anything else is a real bug."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args) -> None:
        """Keep test output quiet; requests are recorded on the LocalServer instead."""

    def do_GET(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        earlier = owner._record(path, dict(self.headers.items()))
        route = owner.routes.get(path)
        if route is None:
            return self._send_status(404)
        if route.hang_up:
            self.close_connection = True
            return None
        stalls = route.stall and earlier >= route.stall_skip
        if stalls and not route.stall_midway:
            owner._pause(route.stall)
        if route.status != 200:
            return self._send_status(route.status)
        if earlier < route.fail_first:
            return self._send_status(500)
        self._send_body(route, earlier, stalls)

    def _send_body(self, route: Route, earlier: int, stalls: bool) -> None:
        start = self._range_start(route)
        size = len(route.body)
        if start and start >= size:
            return self._send_status(416, {"Content-Range": f"bytes */{size}"} if route.content_range else {})
        body = route.body[start:]
        self.send_response(206 if start else 200)
        if route.content_type is not None:
            self.send_header("Content-Type", route.content_type)
        if route.length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        if route.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if start and route.content_range:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        half = len(body) // 2
        if earlier < route.drop_first:
            self.wfile.write(body[:half])
            self.close_connection = True
            return
        if stalls and route.stall_midway:
            self.wfile.write(body[:half])
            self.wfile.flush()
            self.server.owner._pause(route.stall)
            body = body[half:]
        self.wfile.write(body)

    def _range_start(self, route: Route) -> int:
        """Only `bytes=N-` is supported: that is what a resuming client sends."""
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "").strip())
        return max(int(match.group(1)) - route.misresume, 0) if route.ranges and match else 0

    def _send_status(self, code: int, headers: dict[str, str] | None = None) -> None:
        body = b"" if code == 416 else f"error {code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

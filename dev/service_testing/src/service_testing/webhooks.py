"""A local webhook receiver, and an endpoint that never answers: what the notification
service's deliveries meet in the tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class ReceivedWebhook:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.time()


class WebhookReceiver:
    """A local HTTP endpoint, in a thread, that keeps every POST it gets: what a shop's
    webhook receiver would see. Each path answers the statuses given to `answer` in
    turn (with their headers), then 200."""

    def __init__(self) -> None:
        self.received: list[ReceivedWebhook] = []
        self._answers: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers = receiver._record(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def answer(self, path: str, *statuses: int, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._answers.setdefault(path, []).extend((s, headers or {}) for s in statuses)

    def at(self, path: str) -> list[ReceivedWebhook]:
        with self._lock:
            return [hook for hook in self.received if hook.path == path]

    def _record(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str]]:
        with self._lock:
            lowered = {name.lower(): value for name, value in headers.items()}
            self.received.append(ReceivedWebhook(path, lowered, body, time.time()))
            queued = self._answers.get(path)
            return queued.pop(0) if queued else (200, {})

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def unanswering_endpoint() -> Iterator[str]:
    """A URL whose server takes the connection and never answers (a hung endpoint)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(100)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"

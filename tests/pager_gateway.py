"""A pager gateway on 127.0.0.1 for the pager channel's tests: the real peer of tests/pager_channel.py.

`GET /health` answers 200 while the gateway is up; `POST /page` with `{"to", "id", "text"}` accepts
the page (200, `accepted <id>`) and records it. It can go down after a number of accepted pages
(every request then gets 503 with a Retry-After, the health check too) and come back up (`recover`),
and it refuses the addresses it is told to with 404, as a gateway refuses an unknown pager.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Page:
    """A page the gateway accepted."""

    to: str
    id: str
    text: str


class PagerGateway:
    """Run the gateway in a thread while the `with` block lasts; `url` is where it listens."""

    def __init__(self, *, down_after: int | None = None, retry_after: str = "1",
                 unknown: frozenset[str] = frozenset()):
        self.down_after = down_after          # accept this many pages, then answer 503
        self.retry_after = retry_after
        self.unknown = unknown                # addresses refused with 404
        self.pages: list[Page] = []
        self.requests: list[tuple[str, str]] = []     # every request: method and path
        self.refused = 0                      # pages answered 503
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="pager-gateway", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __enter__(self) -> PagerGateway:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def recover(self) -> None:
        """Accept every page from now on."""
        with self.lock:
            self.down_after = None

    def paged(self) -> dict[str, int]:
        """Return how many pages each address got."""
        with self.lock:
            counts: dict[str, int] = {}
            for page in self.pages:
                counts[page.to] = counts.get(page.to, 0) + 1
            return counts

    def is_down(self) -> bool:
        return self.down_after is not None and len(self.pages) >= self.down_after

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with gateway.lock:
                    gateway.requests.append(("GET", self.path))
                    down = gateway.is_down()
                if self.path != "/health":
                    self.answer(404, "no such path")
                elif down:
                    self.answer(503, "down", retry_after=gateway.retry_after)
                else:
                    self.answer(200, "ok")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with gateway.lock:
                    gateway.requests.append(("POST", self.path))
                    if self.path != "/page":
                        status, text = 404, "no such path"
                    else:
                        status, text = gateway.accept(body)
                self.answer(status, text, retry_after=gateway.retry_after if status == 503 else None)

            def answer(self, status: int, text: str, *, retry_after: str | None = None) -> None:
                data = (text + "\n").encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return None

        return Handler

    def accept(self, body: bytes) -> tuple[int, str]:
        """Decide on one page, the lock held: record it if accepted; return the status and the answer."""
        try:
            notice = json.loads(body)
            page = Page(str(notice["to"]), str(notice["id"]), str(notice["text"]))
        except (ValueError, KeyError, TypeError):
            return 400, "a page is JSON with to, id and text"
        if self.is_down():
            self.refused += 1
            return 503, "gateway overloaded"
        if page.to in self.unknown:
            return 404, f"no pager {page.to}"
        self.pages.append(page)
        return 200, f"accepted {page.id}"

"""A local web server that shows an issue's three renditions side by side and reloads on every save.

A watcher thread polls the modification times of the issue file and of every template; when one
changes it renders the issue again and raises the version number. The page asks `/version?since=N`,
which answers at once when the version differs and otherwise waits (at most LONG_POLL_SECONDS), and
reloads itself when the version moved on.

Every answer carries a Content-Security-Policy. The page may run only its own script; the rendered
issue and the site files run none, even opened on their own, since they hold markup from elsewhere.
"""
from __future__ import annotations

import contextlib
import json
import mimetypes
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import TextIO
from urllib.parse import parse_qs

import jinja2

from distributor.errors import InputError
from distributor.settings import Settings
from distributor.web.preview_page import RenderedPreview, page_html, render_preview, site_file, static_file

POLL_SECONDS = 0.3
LONG_POLL_SECONDS = 20.0
HTML, TEXT = "text/html; charset=utf-8", "text/plain; charset=utf-8"
STATIC_FILES = {"preview.css": "text/css; charset=utf-8", "preview.js": "text/javascript; charset=utf-8"}
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' http: https: "
               "data:; frame-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'none'")
# The issue's images and fonts load from wherever the email's do; the sandbox matches the page's iframes.
DOCUMENT_POLICY = ("default-src 'none'; script-src 'none'; img-src * data:; style-src 'unsafe-inline'; "
                   "font-src * data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'; "
                   "sandbox allow-same-origin allow-popups")
_VERSION_NUMBER = re.compile(r"[0-9]{1,18}")
Fingerprint = tuple[tuple[str, int, int], ...]


class PreviewState:
    """The latest rendering (or the error that stopped it) and its version number, shared by threads."""

    def __init__(self, issue: Path, settings: Settings, out: TextIO, title: str | None = None):
        self.issue, self.settings, self.out, self.title = issue, settings, out, title
        self.version = 0
        self.preview: RenderedPreview | None = None
        self.error: str | None = None
        self.page = b""
        self.closing = False
        self._changed = threading.Condition()

    def refresh(self) -> None:
        """Render the issue again; an unusable issue or template keeps the last good panels and says why."""
        preview: RenderedPreview | None
        try:
            preview, error = render_preview(self.issue, self.settings, self.title), None
        except (InputError, jinja2.TemplateError) as exc:
            preview, error = self.preview, _describe(exc)
        with self._changed:
            self.version += 1
            self.preview, self.error = preview, error
            self.page = page_html(preview, error, self.version, self.settings)
            self._changed.notify_all()
        print(f"error: {error}" if error else f"rendered {self.issue} (version {self.version})",
              file=self.out, flush=True)

    def wait_newer(self, since: int, timeout: float) -> int:
        """Return the version as soon as it differs from `since`, or after `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != since or self.closing, timeout)
            return self.version

    def close(self) -> None:
        """Release every request that is waiting for a new version."""
        with self._changed:
            self.closing = True
            self._changed.notify_all()


def watched_files(issue: Path, settings: Settings) -> Fingerprint:
    """Return the path, modification time and size of the issue file and of every template."""
    folders = [Path(str(files("distributor.templates")))]
    if settings.channels.email.template_dir:
        folders.append(Path(settings.channels.email.template_dir).expanduser())
    candidates = [issue] + [path for folder in folders for path in sorted(folder.rglob("*"))
                            if "__pycache__" not in path.parts]
    fingerprint = []
    for path in candidates:
        try:
            status = path.stat()
        except OSError:             # an editor may be replacing the file right now
            fingerprint.append((str(path), -1, -1))
            continue
        if not path.is_dir():
            fingerprint.append((str(path), status.st_mtime_ns, status.st_size))
    return tuple(fingerprint)


def watch(state: PreviewState, seen: Fingerprint, stop: threading.Event) -> None:
    """Render the issue again whenever a watched file differs from `seen`, until `stop` is set."""
    while not stop.wait(POLL_SECONDS):
        current = watched_files(state.issue, state.settings)
        if current != seen:
            seen = current
            state.refresh()


class PreviewHandler(BaseHTTPRequestHandler):
    """Answer the page, its two framed documents, its script and style, the version and site files."""

    server_version = "distributor-preview"
    state: PreviewState          # set on the subclass that handler_for makes
    server: ThreadingHTTPServer  # the one serve_preview makes
    policy = DOCUMENT_POLICY     # until the request is read; the page's own answer widens it

    def do_GET(self) -> None:
        """Answer one GET request from the preview page."""
        path, _, query = self.path.partition("?")     # a request target is a path and a query, nothing else
        self.policy = PAGE_POLICY if path == "/" else DOCUMENT_POLICY
        port = self.server.server_port
        # Refusing other Host names keeps pages on other sites from reading the preview (DNS rebinding).
        if self.headers.get("Host") not in {f"127.0.0.1:{port}", f"localhost:{port}"}:
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"unknown host\n", TEXT)
            return
        static_name = path.removeprefix("/static/")
        if path == "/":
            self._send(HTTPStatus.OK, self.state.page, HTML)
        elif path in ("/email.html", "/wechat.html"):
            self._send_framed(path)
        elif path == "/version":
            self._send_version(parse_qs(query).get("since", [""])[0])
        elif path.startswith("/static/") and static_name in STATIC_FILES:
            self._send(HTTPStatus.OK, static_file(static_name), STATIC_FILES[static_name])
        else:
            self._send_site_file(path)

    def end_headers(self) -> None:
        """End the headers of every answer, errors included, with the content policy and no sniffing."""
        self.send_header("Content-Security-Policy", self.policy)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        super().end_headers()

    def _send_site_file(self, request_path: str) -> None:
        path = site_file(request_path, self.state.settings)
        try:
            body = path.read_bytes() if path is not None else None
        except OSError:             # removed or unreadable since it was found
            body = None
        if path is None or body is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", TEXT)
        else:
            self._send(HTTPStatus.OK, body, mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    def _send_framed(self, path: str) -> None:
        preview = self.state.preview
        if preview is None:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"the issue did not render\n", TEXT)
        else:
            self._send(HTTPStatus.OK, preview.email_html if path == "/email.html" else preview.wechat_html, HTML)

    def _send_version(self, since: str) -> None:
        if since and not _VERSION_NUMBER.fullmatch(since):
            self._send(HTTPStatus.BAD_REQUEST, b"since= must be a version number\n", TEXT)
            return
        current = self.state.wait_newer(int(since), LONG_POLL_SECONDS) if since else self.state.version
        body = json.dumps({"version": current, "error": self.state.error}).encode("utf-8")
        self._send(HTTPStatus.OK, body, "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        # The page was closed or reloaded while it waited: nobody is left to answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the terminal for render messages; requests are not worth a line each."""


def handler_for(state: PreviewState) -> type[PreviewHandler]:
    """Return a request handler class that serves `state`."""
    return type("BoundPreviewHandler", (PreviewHandler,), {"state": state})


def serve_preview(issue: Path, settings: Settings, *, port: int, out: TextIO, title: str | None = None,
                  ready: threading.Event | None = None, stop: threading.Event | None = None) -> int:
    """Serve the live preview of `issue` (titled `title` when given) on 127.0.0.1:`port` (0: any free
    port) until `stop` is set or Ctrl-C; print the URL to `out`, set `ready` once requests are
    answered, and return 0."""
    if not 0 <= port <= 65535:
        raise InputError(f"port {port} is out of range 0-65535")
    if not issue.is_file():
        raise InputError("no such issue file", path=str(issue))
    stop = stop or threading.Event()
    state = PreviewState(issue, settings, out, title)
    server = _listen(port, state)      # before rendering, so a busy port fails before anything is printed
    threads = [threading.Thread(target=server.serve_forever, name="preview-http", daemon=True)]
    try:
        # Taken before the first rendering, so a save made while it runs is seen as a change.
        seen = watched_files(issue, settings)
        state.refresh()
        threads.append(threading.Thread(target=watch, args=(state, seen, stop), name="preview-watch", daemon=True))
        for thread in threads:
            thread.start()
        print(f"Preview of {issue} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)",
              file=out, flush=True)
        if ready is not None:
            ready.set()
        stop.wait()
    except KeyboardInterrupt:
        pass                            # Ctrl-C is how the preview is meant to end
    finally:
        stop.set()
        state.close()
        if threads[0].is_alive():       # shutdown() waits for serve_forever, which may never have started
            server.shutdown()
        server.server_close()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=5)
    return 0


def _listen(port: int, state: PreviewState) -> ThreadingHTTPServer:
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), handler_for(state))
    except OSError as exc:
        raise InputError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from exc


def _describe(exc: Exception) -> str:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"{exc.filename or exc.name}:{exc.lineno}: template error: {exc.message}"
    if isinstance(exc, jinja2.TemplateError):
        return f"template error: {exc}"
    return str(exc)

"""The unsubscribe application on waitress, a production WSGI server (run by `distributor serve`).

waitress reads each request whole before a thread of its pool answers it, so a slow client holds
a connection, never a thread. It refuses a body over the application's limit (413) and a malformed
Content-Length (400) without reading the body. SIGTERM or Ctrl-C stops accepting, gives the
requests in flight STOP_GRACE_SECONDS to be answered and then closes every connection, so slow
clients cannot hold the stop either. Put it behind a TLS reverse proxy; the log shows one line per
request, and every line (waitress's own too) has each unsubscribe and confirmation token redacted,
since a token alone unsubscribes or confirms.
"""
from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import unquote

import waitress
from waitress import wasyncore

from distributor.errors import InputError
from distributor.web.unsubscribe_app import MAX_BODY_BYTES

CHANNEL_TIMEOUT_SECONDS = 30      # an idle or stalled connection is closed after this
STOP_GRACE_SECONDS = 2.0          # how long a stop waits for the requests already received
LOOP_SECONDS = 0.2                # how soon the server notices a stop
LOGGED_TARGET_CHARS = 200         # a longer request target is cut in the log, which it could flood
# Decoded first: the server unquotes the path, so "/%75nsubscribe%2F..." reaches the same page.
_TOKEN_IN_PATH = re.compile(r"(/(?:unsubscribe|confirm)/)[^\s\"']*", re.IGNORECASE)
_log = logging.getLogger(__name__)


def redact_tokens(line: str) -> str:
    """Return `line` percent-decoded, with whatever follows `/unsubscribe/` or `/confirm/` (a signup's
    confirmation link) replaced by `<redacted>`."""
    return _TOKEN_IN_PATH.sub(r"\1<redacted>", unquote(line, errors="replace"))


class RedactTokens(logging.Filter):
    """A log handler's filter that redacts unsubscribe tokens in every record it writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_tokens(record.getMessage()), ()
        return True


class AccessLog:
    """WSGI middleware that logs each request as `ADDRESS "METHOD TARGET PROTOCOL" STATUS`."""

    def __init__(self, app: Callable):
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        status = ["-"]

        def recording_start_response(status_line: str, headers: list, exc_info=None):
            status[0] = status_line.split(" ", 1)[0]
            return start_response(status_line, headers, exc_info)

        try:
            return self.app(environ, recording_start_response)
        finally:
            target = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
            if len(target) > LOGGED_TARGET_CHARS:
                target = target[:LOGGED_TARGET_CHARS] + "…"
            _log.info('%s "%s %s %s" %s', environ.get("REMOTE_ADDR", "-"), environ.get("REQUEST_METHOD"),
                      target, environ.get("SERVER_PROTOCOL"), status[0])


class UnsubscribeServer:
    """waitress serving one WSGI application on one listening socket, run by the thread that calls
    `serve()` until `stop()` is called (from any thread, or a signal handler)."""

    def __init__(self, app: Callable, listener: socket.socket):
        self._map: dict = {}
        self._stopping = threading.Event()
        self._server = waitress.create_server(
            AccessLog(app), map=self._map, sockets=[listener], channel_timeout=CHANNEL_TIMEOUT_SECONDS,
            max_request_body_size=MAX_BODY_BYTES + 1,     # waitress refuses a body of this size or more
            # The signup pages read X-Forwarded-For themselves, from `signup.trusted_proxies` only.
            clear_untrusted_proxy_headers=False,
            ident="distributor")
        self.address: tuple[str, int] = listener.getsockname()[:2]

    def serve(self) -> None:
        """Answer requests until `stop()`, then finish the requests in flight and close every connection."""
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=LOOP_SECONDS, map=self._map, use_poll=True, count=1)
            self._server.accepting = False
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while self._answering() and time.monotonic() < deadline:
                wasyncore.loop(timeout=LOOP_SECONDS, map=self._map, use_poll=True, count=1)
        finally:
            self._server.task_dispatcher.shutdown(timeout=1)
            wasyncore.close_all(self._map, ignore_all=True)

    def stop(self) -> None:
        """Make `serve()` return soon; safe to call from a signal handler."""
        self._stopping.set()

    def _answering(self) -> bool:
        """Say whether a request that was received whole is still waiting for, or sending, its answer."""
        return any(channel.requests or channel.total_outbufs_len
                   for channel in list(self._server.active_channels.values()))


def open_server(app: Callable, host: str, port: int) -> UnsubscribeServer:
    """Return a server for `app`, listening on host:port and not yet serving."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise InputError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from exc
    return UnsubscribeServer(app, listener)

"""`distributor serve`: run the unsubscribe application on the standard library's WSGI server.

The server answers each request in its own thread. Put it behind a TLS reverse proxy; the
request log shows paths with each unsubscribe token redacted, since a token alone unsubscribes.
"""
from __future__ import annotations

import argparse
import logging
import re
import signal
import socket
import socketserver
import threading
from typing import Callable
from urllib.parse import unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .errors import InputError
from .settings import Settings
from .webapp import create_app

DEFAULT_PORT = 8080
# Decoded first: the server unquotes the path, so "/%75nsubscribe%2F..." reaches the same page.
_TOKEN_IN_PATH = re.compile(r"(/unsubscribe/)[^\s\"']*", re.IGNORECASE)


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server with a thread per request; closing it waits for the requests in flight."""

    request_queue_size = 128   # a burst of one-click POSTs from a mail provider must not be refused


class ThreadingWSGIServer6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class RequestHandler(WSGIRequestHandler):
    timeout = 30.0   # a client that stops sending cannot hold a thread, or the shutdown, for ever

    def log_message(self, format: str, *args: object) -> None:
        """Log the request as wsgiref does, with any unsubscribe token replaced by `<redacted>`."""
        super().log_message("%s", redact_tokens(format % args))


def redact_tokens(line: str) -> str:
    """Return `line` percent-decoded, with whatever follows `/unsubscribe/` replaced by `<redacted>`."""
    return _TOKEN_IN_PATH.sub(r"\1<redacted>", unquote(line, errors="replace"))


def port_number(text: str) -> int:
    """Parse a TCP port for argparse: a whole number from 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from exc
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 0-65535")
    return port


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` command to the `distributor` command line."""
    serve = subparsers.add_parser("serve", help="run the one-click unsubscribe web endpoint")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                       help=f"port to listen on, 0 for any free one (default: {DEFAULT_PORT})")
    serve.set_defaults(run=run_serve)


def open_server(app, host: str, port: int) -> ThreadingWSGIServer:
    """Return a threading WSGI server for `app`, bound to host:port and not yet serving."""
    server_class = ThreadingWSGIServer6 if ":" in host else ThreadingWSGIServer
    try:
        return make_server(host, port, app, server_class=server_class, handler_class=RequestHandler)
    except OSError as exc:
        raise InputError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from exc


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until Ctrl-C or SIGTERM, then let the requests in flight finish and return 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(settings)
    try:
        server = open_server(app, args.host, args.port)
    except InputError:
        app.close()
        raise
    host, port = server.server_address[:2]
    print(f"serving unsubscribe pages on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    restore_sigterm = _stop_on_sigterm()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.close()
        restore_sigterm()
    return 0


def _stop_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM (a service manager's stop) end the server as Ctrl-C does; return what undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

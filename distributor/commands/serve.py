"""`distributor serve`: the one-click unsubscribe endpoint and the signup pages on waitress
(distributor.web.server), logging one line per request with its token redacted, and the outbox of
confirmation mails (distributor.web.signup_mailer), until Ctrl-C or SIGTERM."""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable

from distributor.errors import EXIT_OK, InputError, SettingsError
from distributor.settings import Settings
from distributor.web.server import RedactTokens, UnsubscribeServer, open_server
from distributor.web.signup_mailer import SignupMailer
from distributor.web.unsubscribe_app import create_app

DEFAULT_PORT = 8080
MAILER_STOP_SECONDS = 30.0     # the attempt in flight is bounded by smtp.timeout_seconds


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve` to the `distributor` command line."""
    serve = subparsers.add_parser("serve", help="run the unsubscribe and signup web endpoint")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                       help=f"port to listen on, 0 for any free one (default: {DEFAULT_PORT})")
    serve.set_defaults(run=run)


def port_number(text: str) -> int:
    """Parse a TCP port for argparse: a whole number from 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from exc
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 0-65535")
    return port


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until Ctrl-C or SIGTERM, then let the requests in flight finish and return 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactTokens())
    app = create_app(settings)
    try:
        if app.signup.lists and app.signup.public_url is None:
            raise SettingsError("signup.public_url: set it to where readers reach this server (the signup form "
                                "posts there); it cannot be derived from channels.email.unsubscribe_url")
        mailer = SignupMailer(settings, app.signup.wake) if app.signup.enabled else None
        server = open_server(app, args.host, args.port)
    except InputError:
        app.close()
        raise
    host, port = server.address
    host = f"[{host}]" if ":" in host else host
    print(f"serving the signup, confirmation and unsubscribe pages on http://{host}:{port}/ (Ctrl-C stops)",
          flush=True)
    restore_signals = _stop_on_signals(server)
    if mailer is not None:
        mailer.start()
    try:
        server.serve()
    finally:
        restore_signals()
        if mailer is not None:
            mailer.stop(MAILER_STOP_SECONDS)
        app.close()
    return EXIT_OK


def _stop_on_signals(server: UnsubscribeServer) -> Callable[[], None]:
    """Make SIGTERM (a service manager's stop) and Ctrl-C stop `server`; return what undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {number: signal.signal(number, lambda signum, frame: server.stop())
                for number in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
    return restore

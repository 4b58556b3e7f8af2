"""Hostile requests against the real web servers: `distributor serve` run as a subprocess of the CLI,
the unsubscribe application called as any WSGI server calls it, and the live preview server."""
from __future__ import annotations

import concurrent.futures
import contextlib
import io
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from distributor.audience import unsubscribe
from distributor.ledger.store import Ledger
from distributor.settings import LedgerSettings, Settings, SiteSettings
from distributor.web.unsubscribe_app import MAX_BODY_BYTES, create_app

from .conftest import EXAMPLE, ROOT, UNSUBSCRIBE_SECRET
from .test_preview_page import get, serve

TIMEOUT = 10.0
STOP_SECONDS = 5.0           # how long SIGTERM may take to end the server, slow clients or not
ONE_CLICK = b"List-Unsubscribe=One-Click"
BIG_BODY_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen
    port: int
    log: Path                # the server's stderr
    token: str               # a genuine token of a known subscriber


def known_token(ledger_path: Path, address: str) -> str:
    ledger = Ledger(ledger_path)
    try:
        return unsubscribe.sign(ledger.subscriber_id(address), UNSUBSCRIBE_SECRET)
    finally:
        ledger.close()


def suppressed(ledger_path: Path) -> list[str]:
    ledger = Ledger(ledger_path)
    try:
        return [address for address, *_ in ledger.suppressions()]
    finally:
        ledger.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """Run `distributor serve --port 0` over a ledger with one subscriber; kill it if a test left it running."""
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"ledger:\n  path: {tmp_path / 'ledger.sqlite3'}\n", encoding="utf-8")
    token = known_token(tmp_path / "ledger.sqlite3", "reader@example.org")
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:     # a file, not a pipe: a busy log must never block the server
        process = subprocess.Popen([sys.executable, "-m", "distributor", "--settings", str(settings), "serve",
                                    "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr,
                                   env={**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET})
    try:
        assert select.select([process.stdout], [], [], TIMEOUT)[0], "the server printed no banner"
        port = int(re.search(rb"http://127\.0\.0\.1:(\d+)/", process.stdout.readline())[1])
        yield Server(process, port, log, token)
    finally:
        process.kill()
        process.wait(TIMEOUT)
        process.stdout.close()


def stop(server: Server) -> str:
    """Send SIGTERM, require the server to exit 0 within STOP_SECONDS, and return its log."""
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=STOP_SECONDS) == 0
    return server.log.read_text(encoding="utf-8", errors="replace")


def connect(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    connection.settimeout(TIMEOUT)
    return connection


def status_of(connection: socket.socket, timeout: float = TIMEOUT) -> int | None:
    """Return the status code of the reply on `connection`, or None when none came within `timeout`
    (or the server closed the connection without one)."""
    deadline, received = time.monotonic() + timeout, b""
    while b"\r\n" not in received:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([connection], [], [], remaining)[0]:
            return None
        try:
            chunk = connection.recv(4096)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        received += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", received)
    return int(match[1]) if match else None


def post_head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/x-www-form-urlencoded",
             *headers, "", ""]
    return "\r\n".join(lines).encode("ascii")


def healthy(port: int) -> bool:
    with contextlib.closing(connect(port)) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return status_of(connection) == 200


@pytest.mark.parametrize("length", ["-5", "-1", "abc", "1e3", "+26", "0x1a", "26, 26"])
def test_a_malformed_content_length_gets_400_and_no_traceback(server: Server, tmp_path: Path, length: str) -> None:
    with contextlib.closing(connect(server.port)) as connection:
        connection.sendall(post_head(f"/unsubscribe/{server.token}", f"Content-Length: {length}") + ONE_CLICK)
        assert status_of(connection) == 400
    assert healthy(server.port)
    log = stop(server)
    assert "Traceback" not in log and "Error" not in log
    assert suppressed(tmp_path / "ledger.sqlite3") == []


@pytest.mark.parametrize("framing, expected", [("Content-Length: -1", 400), ("Content-Length: 2097152", 413),
                                               ("Transfer-Encoding: chunked", 413)])
def test_a_big_body_is_refused_before_it_is_read(server: Server, tmp_path: Path, framing: str,
                                                 expected: int) -> None:
    """The reply must come while most of a 2 MB body is still unsent: the server did not wait for it."""
    first, rest = 64 * 1024, BIG_BODY_BYTES - 64 * 1024
    chunked = framing.startswith("Transfer-Encoding")
    with contextlib.closing(connect(server.port)) as connection:
        connection.sendall(post_head(f"/unsubscribe/{server.token}", framing))
        body = b"x" * first
        connection.sendall(b"%x\r\n%s\r\n" % (len(body), body) if chunked else body)
        assert status_of(connection) == expected
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):   # the server may have hung up
            connection.sendall(b"x" * rest)
    assert healthy(server.port)
    assert "Traceback" not in stop(server)
    assert suppressed(tmp_path / "ledger.sqlite3") == []


def test_sigterm_stops_the_server_while_slow_clients_hold_connections(server: Server) -> None:
    slow = [connect(server.port) for _ in range(8)]
    try:
        slow[0].sendall(b"POST /unsubscribe/x HTTP/1.1\r\nHost: 127.0.0.1\r\n")          # headers never end
        slow[1].sendall(post_head(f"/unsubscribe/{server.token}", "Content-Length: 100") + b"List-Unsub")
        slow[2].sendall(b"G")
        assert healthy(server.port)      # accepted after the slow ones, so they are all connected now
        started = time.monotonic()
        log = stop(server)
        assert time.monotonic() - started < STOP_SECONDS
    finally:
        for connection in slow:
            connection.close()
    assert "Traceback" not in log


def _hang_up_hard(connection: socket.socket) -> None:
    """Close with a reset instead of a FIN, as a client that crashed does."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _bad_requests(token: str) -> list[tuple[bytes, bool]]:
    """(bytes to send, whether to hang up at once without reading the reply) for each kind of bad request."""
    path = f"/unsubscribe/{token}"
    return [
        (post_head(path, "Content-Length: -5") + ONE_CLICK, False),
        (post_head(path, "Content-Length: -1") + ONE_CLICK, False),
        (post_head(path, "Content-Length: many") + ONE_CLICK, False),
        (post_head(path, "Content-Length: 99999999999999999999"), False),
        (post_head(path, "Content-Length: 5", "Content-Length: 6") + ONE_CLICK, False),
        (post_head(path, "Transfer-Encoding: chunked", "Content-Length: 26") + b"zz\r\n" + ONE_CLICK, False),
        (post_head(path, "Transfer-Encoding: chunked") + b"zz\r\nxx\r\n0\r\n\r\n", False),
        (post_head(path, "Content-Type: multipart/form-data; boundary=\x7f", "Content-Length: 26") + ONE_CLICK,
         False),
        # A client that crashes half-way through its body: the request is never whole, so nothing may
        # come of it. (A whole one-click body before the reset is a valid request: whether it is
        # served before the reset arrives is a race, not a fault.)
        (post_head(path, "Content-Length: 26") + ONE_CLICK[:10], True),
        (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(), True),
        (b"GET /unsubscribe/%00 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", False),
        (b"GET /unsubscribe/\xff\xfe%ff.%c0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", False),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", False),
        (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-" + b"h" * 300_000 + b": 1\r\n\r\n", False),
        (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nNo colon here\r\n\r\n", False),
        (b"\x00\x01\x02\x03\r\n\r\n", False),
        (b"GET /\r\n\r\n", False),
        (b"BREW /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", False),
        (b"GET /healthz HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n", False),
        (b"POST /unsubscribe/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le", True),
    ]


def test_a_burst_of_bad_requests_leaves_no_traceback_in_the_log(server: Server, tmp_path: Path) -> None:
    kinds = _bad_requests(server.token)

    def send(index: int) -> None:
        data, hang_up = kinds[index % len(kinds)]
        with contextlib.closing(connect(server.port)) as connection, \
                contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(data)
            if hang_up:
                _hang_up_hard(connection)
            else:
                status_of(connection)      # whatever it is (or none), within a bounded time

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(send, range(200), timeout=120))
    assert healthy(server.port)
    log = stop(server)
    assert "Traceback" not in log and "Exception" not in log
    assert server.token not in log and max(map(len, log.splitlines())) < 1000
    assert suppressed(tmp_path / "ledger.sqlite3") == []


def _call(app, environ: dict) -> tuple[str, io.BytesIO]:
    """Call `app` as a WSGI server does, with a one-click body; return the status and the body stream."""
    body = io.BytesIO(ONE_CLICK)
    statuses = []
    environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/x-www-form-urlencoded",
               "wsgi.input": body, **environ}
    b"".join(app(environ, lambda status, headers: statuses.append(status)))
    return statuses[0], body


def test_the_application_itself_refuses_a_bad_length_without_reading(tmp_path: Path, monkeypatch) -> None:
    """Under gunicorn or uWSGI the application sees what the client sent: it must not trust the length."""
    monkeypatch.setenv("DISTRIBUTOR_UNSUBSCRIBE_SECRET", UNSUBSCRIBE_SECRET)
    ledger_path = tmp_path / "ledger.sqlite3"
    token = known_token(ledger_path, "reader@example.org")
    app = create_app(Settings(ledger=LedgerSettings(path=str(ledger_path))))
    try:
        for length, expected in (("-5", "400"), ("-1", "400"), ("abc", "400"), ("٢٦", "400"),
                                 (str(MAX_BODY_BYTES + 1), "413"), ("9" * 5000, "413")):
            status, body = _call(app, {"PATH_INFO": f"/unsubscribe/{token}", "CONTENT_LENGTH": length})
            assert (status.split()[0], body.tell()) == (expected, 0), length
        assert suppressed(ledger_path) == []
        status, _ = _call(app, {"PATH_INFO": f"/unsubscribe/{token}", "CONTENT_LENGTH": str(len(ONE_CLICK))})
        assert status == "200 OK"
    finally:
        app.close()
    assert MAX_BODY_BYTES <= 16 * 1024     # a one-click POST is a few dozen bytes


@pytest.fixture
def preview(tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "page.txt").write_text("a site file", encoding="utf-8")
    issue = tmp_path / "issue.md"
    issue.write_bytes(EXAMPLE.read_bytes())
    with serve(issue, Settings(site=SiteSettings(site_root=str(site)))) as running:
        yield running


@pytest.mark.parametrize("path", ["/site/%00", "/site/a%00b.png", "/%00", "/site/" + "a" * 5000,
                                  "/site/" + "%2F" * 300 + "page.txt", "/site/%ff%fe", "/static/%00"])
def test_a_hostile_preview_path_gets_404_without_a_traceback(preview, capfd, path: str) -> None:
    assert get(preview.url.rstrip("/") + path)[0] == 404
    assert get(preview.url + "site/page.txt")[0] == 200          # the server goes on answering
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("since", ["²", "%C2%B2", "%D9%A2", "%FF", "9" * 5000, "-1", "1.0", " 1"])
def test_a_non_ascii_or_malformed_since_gets_400_without_a_traceback(preview, capfd, since: str) -> None:
    status, kind, body = get(f"{preview.url}version?since={urllib.parse.quote(since, safe='%')}")
    assert status == 400 and b"since" in body
    assert get(f"{preview.url}version")[0] == 200
    assert "Traceback" not in capfd.readouterr().err


def test_every_preview_response_forbids_scripts_but_the_pages_own(preview) -> None:
    def policy(path: str) -> dict[str, str]:
        with urllib.request.urlopen(preview.url + path, timeout=TIMEOUT) as reply:
            header = reply.headers["Content-Security-Policy"] or ""
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
        return {part.split()[0]: part.strip() for part in header.split(";") if part.strip()}

    page = policy("")
    assert page["script-src"] == "script-src 'self'" and page["default-src"] == "default-src 'none'"
    assert "'unsafe-inline'" not in page["script-src"] and page["frame-ancestors"] == "frame-ancestors 'none'"
    for path in ("email.html", "wechat.html", "site/page.txt"):
        framed = policy(path)
        assert framed["script-src"] == "script-src 'none'", path
        assert framed["sandbox"] == "sandbox allow-same-origin allow-popups", path

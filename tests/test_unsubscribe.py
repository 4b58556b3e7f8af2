"""The unsubscribe endpoint over real HTTP on 127.0.0.1, fed by tokens from real published mail,
and the command line's wiring (the `subscribers`
commands themselves: tests/test_subscriber_commands.py)."""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import email
import email.policy
import http.client
import io
import os
import re
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from distributor import cli
from distributor.audience import unsubscribe
from distributor.commands import serve as serve_command
from distributor.commands import subscribers as subscriber_commands
from distributor.commands.publish import publish_and_report as publish
from distributor.delivery.publish import PublishOptions
from distributor.ledger.store import Ledger
from distributor.settings import LedgerSettings, Settings, SiteSettings, load_settings
from distributor.web import server as serve
from distributor.web.unsubscribe_app import create_app

from .conftest import EXAMPLE, ROOT
from .publish_helpers import SECRET, configure, run_publish
from .smtp_server import FaultySmtpServer

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")
TIMEOUT = 10.0


@contextlib.contextmanager
def running(settings: Settings):
    """Serve the application for `settings` on a free port of 127.0.0.1; yield the port."""
    app = create_app(settings)
    server = serve.open_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server.address[1]
    finally:
        server.stop()
        thread.join(TIMEOUT)
        app.close()
    assert not thread.is_alive(), "the server did not stop"


def request(port: int, method: str, path: str, body: bytes | None = None,
            content_type: str | None = None) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": content_type} if content_type else {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode("utf-8")
    finally:
        connection.close()


def one_click_urlencoded(port: int, token: str) -> tuple[int, dict[str, str], str]:
    return request(port, "POST", f"/unsubscribe/{token}", b"List-Unsubscribe=One-Click",
                   "application/x-www-form-urlencoded")


def one_click_multipart(port: int, token: str) -> tuple[int, dict[str, str], str]:
    body = (b"--b0undary\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
            b"One-Click\r\n--b0undary--\r\n")
    return request(port, "POST", f"/unsubscribe/{token}", body, "multipart/form-data; boundary=b0undary")


def tokens_by_recipient(server: FaultySmtpServer) -> dict[str, str]:
    """Map each recipient to the token in its message's List-Unsubscribe URL."""
    tokens = {}
    for received in server.messages:
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = re.search(r"<(https://[^>]+)>", str(message["List-Unsubscribe"]))[1]
        tokens[received.rcpt_tos[0]] = url.rsplit("/", 1)[1]
    return tokens


def ledger_settings(tmp_path: Path, language: str = "zh") -> Settings:
    return Settings(site=SiteSettings(language=language), ledger=LedgerSettings(path=str(tmp_path / "ledger.sqlite3")))


def known_token(tmp_path: Path, address: str) -> str:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        return unsubscribe.sign(ledger.subscriber_id(address), SECRET)
    finally:
        ledger.close()


def suppressions(tmp_path: Path) -> dict[str, tuple]:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        return {address: (reason, source) for address, reason, source, _ in ledger.suppressions()}
    finally:
        ledger.close()


def test_published_links_unsubscribe_and_the_next_issue_skips_them(tmp_path):
    readers = ["urlencoded@example.org", "multipart@example.org", "button@example.org", "looker@example.org"]
    with FaultySmtpServer() as smtp:
        settings_path = configure(tmp_path, smtp, readers)
        assert run_publish(settings_path)[0] == 0
        tokens = tokens_by_recipient(smtp)
        assert sorted(tokens) == sorted(readers)
        with running(load_settings(settings_path)) as port:
            status, headers, page = request(port, "GET", f"/unsubscribe/{tokens['looker@example.org']}")
            assert status == 200 and "<form" in page and "@" not in page
            assert headers["Cache-Control"] == "no-store"
            # Press the page's own button, as a browser would: its name and value, to the same URL.
            form = re.search(r'<form method="post"><button type="submit" name="(\w+)" value="(\w+)"', page)
            assert not re.search(r"<form[^>]*action=", page)
            status, _, _ = request(port, "GET", f"/unsubscribe/{tokens['button@example.org']}")
            assert status == 200 and suppressions(tmp_path) == {}
            assert request(port, "POST", f"/unsubscribe/{tokens['button@example.org']}",
                           f"{form[1]}={form[2]}".encode(), "application/x-www-form-urlencoded")[0] == 200
            for _ in range(2):            # repeating it is harmless
                status, _, page = one_click_urlencoded(port, tokens["urlencoded@example.org"])
                assert status == 200 and "已退订" in page and "@" not in page
            assert one_click_multipart(port, tokens["multipart@example.org"])[0] == 200
        assert suppressions(tmp_path) == {
            "urlencoded@example.org": ("List-Unsubscribe one-click", "one-click"),
            "multipart@example.org": ("List-Unsubscribe one-click", "one-click"),
            "button@example.org": ("unsubscribe page", "page")}

        next_issue = tmp_path / "next-issue.md"
        next_issue.write_text(EXAMPLE.read_text(encoding="utf-8").replace(
            "permalink: /example-weekly-11-4th-2026/", "permalink: /example-weekly-12-1st-2026/"), encoding="utf-8")
        before = len(smtp.messages)
        status = publish(PublishOptions(issue=next_issue, channels=(), yes=True), load_settings(settings_path),
                         out=io.StringIO(), err=io.StringIO())
        assert status == 0
        assert [message.rcpt_tos for message in smtp.messages[before:]] == [("looker@example.org",)]


def test_bad_tokens_get_400_and_reveal_no_address(tmp_path):
    good = known_token(tmp_path, "reader@example.org")
    subscriber_id = good.rsplit(".", 1)[0]
    bad = {
        "forged": f"{subscriber_id}.{'A' * 22}",
        "truncated": good[:-1],
        "no mac": subscriber_id,
        "foreign": unsubscribe.sign(subscriber_id, "another-secret"),
        "unknown id": unsubscribe.sign("nobody-knows-me", SECRET),
    }
    with running(ledger_settings(tmp_path, "en")) as port:
        for name, token in bad.items():
            for method in ("GET", "POST"):
                status, _, page = one_click_urlencoded(port, token) if method == "POST" else \
                    request(port, "GET", f"/unsubscribe/{token}")
                assert status == 400, (name, method)
                assert "Invalid link" in page and "@" not in page and "reader" not in page, (name, method)
        assert request(port, "GET", f"/unsubscribe/{good}")[0] == 200
    assert suppressions(tmp_path) == {}


def test_a_post_that_does_not_ask_changes_nothing(tmp_path):
    token = known_token(tmp_path, "reader@example.org")
    with running(ledger_settings(tmp_path, "en")) as port:
        for body, content_type in ((b"", None), (b"List-Unsubscribe=Maybe", "application/x-www-form-urlencoded"),
                                   (b"List-Unsubscribe=One-Click", "multipart/form-data; boundary=none")):
            status, _, page = request(port, "POST", f"/unsubscribe/{token}", body, content_type)
            assert status == 400 and "nothing was changed" in page
        # Only the announced length is sent: the server must refuse before reading a byte of the body.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        connection.putrequest("POST", f"/unsubscribe/{token}")
        connection.putheader("Content-Length", "70000")
        connection.endheaders()
        assert connection.getresponse().status == 413
        connection.close()
    assert suppressions(tmp_path) == {}


def test_fifty_concurrent_one_click_posts_are_all_recorded(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    addresses = [f"reader{i:02d}@example.org" for i in range(50)]
    tokens = [unsubscribe.sign(ledger.subscriber_id(address), SECRET) for address in addresses]
    ledger.close()
    with running(ledger_settings(tmp_path)) as port, concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        start = threading.Barrier(50, timeout=TIMEOUT)

        def post(index: int) -> int:
            start.wait()             # all fifty requests leave together
            send = one_click_multipart if index % 2 else one_click_urlencoded
            return send(port, tokens[index])[0]

        statuses = list(pool.map(post, range(50), timeout=30))
    assert statuses == [200] * 50
    assert suppressions(tmp_path) == {address: ("List-Unsubscribe one-click", "one-click") for address in addresses}


def test_health_unknown_paths_and_methods(tmp_path):
    token = known_token(tmp_path, "reader@example.org")
    with running(ledger_settings(tmp_path, "en")) as port:
        assert request(port, "GET", "/healthz")[::2] == (200, "ok\n")
        assert request(port, "HEAD", "/healthz")[::2] == (200, "")
        assert request(port, "GET", "/")[0] == 404
        assert request(port, "GET", "/unsubscribe/")[0] == 404
        assert request(port, "GET", f"/unsubscribe/{token}/extra")[0] == 404
        status, headers, _ = request(port, "PUT", f"/unsubscribe/{token}", b"List-Unsubscribe=One-Click")
        assert status == 405 and headers["Allow"] == "GET, HEAD, POST"
        assert request(port, "POST", "/healthz", b"")[0] == 405
        status, _, page = request(port, "GET", f"/unsubscribe/{token}")
        assert '<html lang="en">' in page and ">Unsubscribe</button>" in page
    assert suppressions(tmp_path) == {}


def parser() -> argparse.ArgumentParser:
    """The `distributor` command line itself."""
    return cli._parser()


def test_parser_wires_every_command(tmp_path):
    args = parser().parse_args(["serve", "--port", "0"])
    assert (args.run, args.host, args.port) == (serve_command.run, "127.0.0.1", 0)
    assert parser().parse_args(["serve"]).port == serve_command.DEFAULT_PORT
    for argv, function in ((["subscribers", "list"], subscriber_commands.run_list),
                           (["subscribers", "unsubscribe", "a@example.org"], subscriber_commands.run_unsubscribe),
                           (["subscribers", "resubscribe", "a@example.org"], subscriber_commands.run_resubscribe),
                           (["subscribers", "export", "-"], subscriber_commands.run_export)):
        assert parser().parse_args(argv).run is function
    with pytest.raises(SystemExit):
        parser().parse_args(["subscribers"])


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "http"])
def test_serve_refuses_a_port_out_of_range(port, capsys):
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(["serve", "--port", port])
    assert caught.value.code == 2
    assert "--port" in capsys.readouterr().err
    assert parser().parse_args(["serve", "--port", "65535"]).port == 65535


def test_serve_command_answers_and_stops_on_sigterm(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"ledger:\n  path: {tmp_path / 'ledger.sqlite3'}\n", encoding="utf-8")
    token = known_token(tmp_path, "private.reader@example.org")
    process = subprocess.Popen([sys.executable, "-m", "distributor", "--settings", str(settings), "serve",
                                "--port", "0"], cwd=ROOT,
                               env={**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert select.select([process.stdout], [], [], TIMEOUT)[0], "the server printed no banner"
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", process.stdout.readline())[1])
        assert request(port, "GET", "/healthz")[0] == 200
        subscriber_id, mac = token.rsplit(".", 1)
        # The same page by a spelling the server decodes: the log must not show the token either way.
        encoded = "/%75nsubscribe%2F" + "".join(f"%{ord(char):02X}" for char in token)
        assert request(port, "GET", encoded)[0] == 200
        assert request(port, "GET", f"/unsubscribe/{token}?from=mail")[0] == 200
        assert one_click_urlencoded(port, token)[0] == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT) == 0
        log = process.stderr.read()
    finally:
        process.kill()
        process.wait(timeout=TIMEOUT)
    assert '"GET /healthz HTTP/1.1" 200' in log and "unsubscribed subscriber" in log
    assert "@" not in log and "private" not in log
    assert '"POST /unsubscribe/<redacted> HTTP/1.1" 200' in log and log.count("/unsubscribe/<redacted>") == 3
    assert mac not in log and token not in log
    assert suppressions(tmp_path) == {"private.reader@example.org": ("List-Unsubscribe one-click", "one-click")}

"""The whole loop of a reader, in headless Chromium against the pages and the outbox of `distributor
serve`: the reader fills the signup form, the confirmation mail arrives at the SMTP test server, the
reader follows its link and confirms, a `publish` delivers the issue to them, and through the
unsubscribe link of that issue they switch to plain text (the next issue comes as text) and then
unsubscribe from everything (the issue after gets nobody)."""
from __future__ import annotations

import contextlib
import email
import email.policy
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from distributor.ledger.store import Ledger
from distributor.ledger.subscribers import SubscriberStore
from distributor.settings import load_settings

from .browser import chromium
from .conftest import EXAMPLE
from .publish_helpers import cli, fast_retry_and_ledger
from .smtp_server import FaultySmtpServer
from .test_signup import serving as signup_serving

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")
TIMEOUT = 20.0
READER = "Reader.Wang@example.org"


def wait_for(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    """Return once `condition()` holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def write_settings(tmp_path: Path, smtp: FaultySmtpServer, port: int) -> Path:
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"""
site: {{name: Example Weekly, language: en}}
channels:
  email:
    lists: [weekly]
    from_address: news@example.org
    unsubscribe_url: http://127.0.0.1:{port}/unsubscribe/{{token}}
  text:
    lists: [weekly]
  wechat: {{enabled: false}}
signup:
  public_url: http://127.0.0.1:{port}/
  min_fill_seconds: 0
smtp:
  host: 127.0.0.1
  port: {smtp.port}
  security: plain
  timeout_seconds: 2.0
{fast_retry_and_ledger(tmp_path)}
""", encoding="utf-8")
    return settings


@contextlib.contextmanager
def serving(tmp_path: Path, smtp: FaultySmtpServer) -> Iterator[tuple[Path, int]]:
    """Serve the pages and the outbox on a port of 127.0.0.1 held from before the settings are written
    (their links must name it); yield the settings file and the port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    settings_path = write_settings(tmp_path, smtp, listener.getsockname()[1])
    with signup_serving(load_settings(settings_path), listener=listener) as port:
        yield settings_path, port


def publish(settings: Path, issue: Path) -> int:
    """`distributor publish ISSUE --yes`, as its own process (the browser's driver holds this one's loop)."""
    result = cli(settings, "publish", str(issue), "--yes")
    assert result.returncode == 0, result.stderr
    return result.returncode


def issue_copy(tmp_path: Path, number: int) -> Path:
    """The bundled example as another issue: its own permalink and title."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("permalink: /example-weekly-11-4th-2026/", f"permalink: /example-weekly-{number}/", 1)
    text = text.replace("title: 示例周报·11 月 / 第四期 / 2026", f"title: 示例周报 第 {number} 期", 1)
    path = tmp_path / f"issue-{number}.md"
    path.write_text(text, encoding="utf-8")
    return path


def messages_to(smtp: FaultySmtpServer, address: str) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(m.data, policy=email.policy.default) for m in smtp.messages
            if address.lower() in (r.lower() for r in m.rcpt_tos)]


def link_in(message: email.message.EmailMessage, path: str) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    found = re.search(rf"http://127\.0\.0\.1:\d+/{path}/[A-Za-z0-9._~-]+", text)
    assert found, f"no /{path}/ link in:\n{text}"
    return found[0]


def unsubscribe_link(message: email.message.EmailMessage) -> str:
    return re.search(r"<(http://[^>]+)>", str(message["List-Unsubscribe"]))[1]


def reader_lists(tmp_path: Path) -> dict[str, tuple[str, str]]:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        reader = SubscriberStore(ledger).subscriber(READER)
        return {s.list: (s.status, s.format) for s in reader.subscriptions} if reader else {}


def test_a_reader_signs_up_confirms_receives_changes_format_and_unsubscribes_in_a_browser(tmp_path: Path) -> None:
    outside: list[str] = []

    def local_only(route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with FaultySmtpServer() as smtp, serving(tmp_path, smtp) as (settings, port), chromium() as browser:
        from playwright.sync_api import expect
        page = browser.new_page()
        page.route("**/*", local_only)

        page.goto(f"http://127.0.0.1:{port}/subscribe?list=weekly")
        page.fill("input[name=email]", READER)
        page.fill("input[name=name]", "Reader Wang")
        page.click("button[type=submit]")
        expect(page.locator("main")).to_contain_text("mail")             # "check your mail"
        wait_for(lambda: messages_to(smtp, READER), "the confirmation mail")
        (confirmation,) = messages_to(smtp, READER)
        assert "weekly" in confirmation["Subject"] or "weekly" in confirmation.get_body().get_content()
        assert reader_lists(tmp_path) == {"weekly": ("unconfirmed", "email")}

        page.goto(link_in(confirmation, "confirm"))                     # GET: a button, nothing changed
        assert reader_lists(tmp_path) == {"weekly": ("unconfirmed", "email")}
        page.click("form[method=post] button")
        expect(page.locator("main")).to_contain_text("weekly")
        assert reader_lists(tmp_path) == {"weekly": ("active", "email")}

        assert publish(settings, EXAMPLE) == 0
        issue = messages_to(smtp, READER)[-1]
        assert issue.get_body(preferencelist=("html",)) is not None       # the email channel's HTML mail
        assert "示例周报" in str(issue["Subject"])

        page.goto(unsubscribe_link(issue))                               # the preferences page
        weekly = page.locator("input[type=checkbox][value=weekly]")
        expect(weekly).to_be_checked()
        page.check("input[type=radio][value=text]")
        page.click("form.preferences button[type=submit]")
        expect(page.locator("main")).to_be_visible()
        wait_for(lambda: reader_lists(tmp_path) == {"weekly": ("active", "text")}, "the format to be text")

        second = issue_copy(tmp_path, 2)
        assert publish(settings, second) == 0
        text_issue = messages_to(smtp, READER)[-1]
        assert "第 2 期" in str(text_issue["Subject"])
        assert text_issue.get_content_type() == "text/plain"             # the text channel's mail

        page.goto(unsubscribe_link(text_issue))
        page.click("button[name=confirm][value=unsubscribe]")
        wait_for(lambda: reader_lists(tmp_path) == {"weekly": ("unsubscribed", "text")}, "the unsubscribe")
        received = len(messages_to(smtp, READER))
        assert publish(settings, issue_copy(tmp_path, 3)) == 0
        assert len(messages_to(smtp, READER)) == received
    assert outside == []


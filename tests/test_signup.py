"""The double opt-in signup of `distributor serve` over real HTTP on 127.0.0.1: the form, its POST, the
confirmation mail through the outbox to the aiosmtpd test server, the confirmation link, and the
`subscribe-form` snippet, over a real SQLite ledger."""
from __future__ import annotations

import concurrent.futures
import contextlib
import email
import email.policy
import html.parser
import http.client
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import lxml.html
import pytest

from distributor import cli
from distributor.audience import signup, tokens, unsubscribe
from distributor.ledger.store import Ledger
from distributor.ledger.subscribers import SubscriberStore
from distributor.settings import Settings, load_settings
from distributor.web import server as serve
from distributor.web.signup_mailer import SignupMailer
from distributor.web.signup_pages import Confirmation, SignupForm, SignupPages
from distributor.web.unsubscribe_app import create_app

from .conftest import ROOT
from .conftest import UNSUBSCRIBE_SECRET as SECRET
from .smtp_server import FaultySmtpServer

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")
TIMEOUT = 10.0
PUBLIC = "https://news.example.org/letters/"
FORM = "application/x-www-form-urlencoded"


def write_settings(tmp_path: Path, smtp_port: int, *, signup_extra: str = "", lists: str = "[weekly, digest]",
                   language: str = "zh", unsubscribe_url: str = f"{PUBLIC}unsubscribe/{{token}}",
                   text: str = "{enabled: false}") -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(f"""
site: {{name: 示例周报, language: {language}}}
channels:
  email:
    from_name: 示例周报
    from_address: news@example.org
    return_path: bounces@example.org
    unsubscribe_url: {unsubscribe_url}
    lists: {lists}
  wechat: {{enabled: false}}
  text: {text}
smtp: {{host: 127.0.0.1, port: {smtp_port}, security: plain, timeout_seconds: 2.0}}
ledger: {{path: {tmp_path / 'ledger.sqlite3'}}}
signup:
  min_fill_seconds: 0
{signup_extra}
""", encoding="utf-8")
    return path


@contextlib.contextmanager
def serving(settings: Settings, *, mailer: bool = True, listener: socket.socket | None = None) -> Iterator[int]:
    """Serve the app for `settings` with its outbox, as `distributor serve` does, on `listener` (a socket
    already bound, when the settings must name its port) or a free port of 127.0.0.1; yield the port."""
    app = create_app(settings)
    server = serve.UnsubscribeServer(app, listener) if listener else serve.open_server(app, "127.0.0.1", 0)
    outbox = SignupMailer(settings, app.signup.wake) if mailer else None
    thread = serve_thread(server)
    if outbox:
        outbox.start()
    try:
        yield server.address[1]
    finally:
        server.stop()
        thread.join(TIMEOUT)
        if outbox:
            outbox.stop(TIMEOUT)
        app.close()
    assert not thread.is_alive(), "the server did not stop"


def serve_thread(server: serve.UnsubscribeServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    return thread


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            ) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def form_token(port: int, query: str = "") -> str:
    status, _, page = request(port, "GET", f"/subscribe{query}")
    assert status == 200
    return re.search(rb'name="form_token" value="([^"]+)"', page)[1].decode()


def post_signup(port: int, address: str, *, token: str | None = None, list_name: str = "weekly",
                name: str = "", extra: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    fields = {"email": address, "name": name, "list": list_name, "lang": "en", "website": "",
              "form_token": form_token(port) if token is None else token, **(extra or {})}
    status, _, page = request(port, "POST", "/subscribe", urlencode(fields).encode(),
                              {"Content-Type": FORM, **(headers or {})})
    return status, page


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextlib.contextmanager
def store_of(tmp_path: Path) -> Iterator[SubscriberStore]:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        yield SubscriberStore(ledger)


def outbox(tmp_path: Path) -> dict[str, int]:
    """The outbox's mails by status."""
    with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite3")) as db:
        return dict(db.execute("SELECT status, COUNT(*) FROM signup_mails GROUP BY status").fetchall())


def nonce_of(tmp_path: Path, address: str) -> str:
    """The nonce of the address's latest consent request."""
    with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite3")) as db:
        return db.execute("SELECT nonce FROM consents WHERE address = ? ORDER BY rowid DESC LIMIT 1",
                          (address,)).fetchone()[0]


def drained(tmp_path: Path) -> bool:
    return not {"pending", "sending"} & outbox(tmp_path).keys()


def confirmation_link(message: email.message.EmailMessage) -> str:
    text = message.get_body(("plain",)).get_content()
    return re.search(rf"{re.escape(PUBLIC)}confirm/\S+", text)[0]


def parsed(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def path_of(link: str) -> str:
    return "/" + urlsplit(link).path.removeprefix(urlsplit(PUBLIC).path)


def test_the_form_page_in_chinese_and_english_has_the_fields(tmp_path):
    settings = load_settings(write_settings(tmp_path, 1))
    with serving(settings, mailer=False) as port:
        for query, language, label in (("", "zh", "邮箱地址"), ("?lang=en", "en", "Email address")):
            status, headers, body = request(port, "GET", f"/subscribe{query}")
            page = body.decode()
            assert status == 200 and f'<html lang="{language}">' in page and label in page
            assert "form-action 'self'" in headers["Content-Security-Policy"]
            assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
            form = lxml.html.fromstring(body).forms[0]
            assert form.method == "POST" and "action" not in form.attrib      # posts to its own URL
            assert set(form.fields) == {"email", "name", "list", "lang", "form_token", "website"}
            assert [option.get("value") for option in form.inputs["list"]] == ["weekly", "digest"]
            honeypot = form.inputs["website"]
            assert honeypot.value == "" and honeypot.get("tabindex") == "-1"
            assert "left: -10000px" in honeypot.getparent().get("style")
            assert "<script" not in page
        _, _, body = request(port, "GET", "/subscribe?list=digest")
        form = lxml.html.fromstring(body).forms[0]
        assert form.inputs["list"].value == "digest"
        assert request(port, "GET", "/subscribe?list=nosuch")[0] == 404
        assert request(port, "GET", "/subscribe?lang=fr")[0] == 400
        assert request(port, "PUT", "/subscribe")[0] == 405
    with store_of(tmp_path) as store:
        assert list(store.subscribers()) == []


def test_a_signup_is_mailed_and_confirmed_by_the_button_only(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with serving(settings) as port:
            status, page = post_signup(port, "New.Reader@Example.org", name="Ada",
                                       headers={"Referer": "https://blog.example.org/join/"})
            assert status == 200 and b"Check your mail" in page and b"example.org" not in page.lower()
            wait_for(lambda: len(smtp.messages) == 1, "the confirmation mail")
            received = smtp.messages[0]
            assert received.mail_from == "bounces@example.org" and received.rcpt_tos == ("New.Reader@Example.org",)
            message = parsed(received.data)
            assert message["To"].addresses[0].addr_spec == "New.Reader@Example.org"
            assert message["From"].addresses[0].display_name == "示例周报"
            assert message["Message-ID"] and "weekly" in message["Subject"] and "示例周报" in message["Subject"]
            link = confirmation_link(message)
            assert link in message.get_body(("html",)).get_content()
            with store_of(tmp_path) as store:
                reader = store.subscriber("new.reader@example.org")
                assert reader.on("weekly").status == "unconfirmed" and reader.name == "Ada"
                (list_name, requested, client, form_url, confirmed), = store.consents(reader.address)
                assert (list_name, form_url, confirmed) == ("weekly", "https://blog.example.org/join/", None)
                assert client == tokens.keyed_hash(SECRET, "client", "127.0.0.1") and "127" not in client

            status, _, body = request(port, "GET", path_of(link))
            assert status == 200 and b"<form method=\"post\">" in body and b"@" not in body
            with store_of(tmp_path) as store:
                assert store.subscriber("new.reader@example.org").on("weekly").status == "unconfirmed"

            status, _, body = request(port, "POST", path_of(link), b"confirm=subscribe", {"Content-Type": FORM})
            assert status == 200 and b"You are subscribed to the list" in body and b"@" not in body
            with store_of(tmp_path) as store:
                assert store.subscriber("new.reader@example.org").on("weekly").status == "active"
                (_, requested, client, _, confirmed), = store.consents("new.reader@example.org")
                assert requested <= confirmed
                history = [(c.status, c.source) for c in store.history("new.reader@example.org")]
                assert history == [("unconfirmed", "signup"), ("active", "confirm")]
                assert store.history("new.reader@example.org")[-1].detail == f"client {client}"

            # A replayed confirmation changes nothing and says so.
            status, _, body = request(port, "POST", path_of(link), b"confirm=subscribe", {"Content-Type": FORM})
            assert status == 200 and b"Already confirmed" in body
            with store_of(tmp_path) as store:
                assert len(store.history("new.reader@example.org")) == 2
            # A POST without the button's field confirms nothing.
            assert request(port, "POST", path_of(link), b"", {"Content-Type": FORM})[0] == 400


def test_the_confirmation_mail_speaks_the_language_of_the_form(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with serving(settings) as port:
            post_signup(port, "zh@example.org", list_name="digest", extra={"lang": "zh"})
            post_signup(port, "en@example.org", list_name="digest")
            wait_for(lambda: len(smtp.messages) == 2, "two confirmation mails")
    mails = {m.rcpt_tos[0]: parsed(m.data) for m in smtp.messages}
    for address, words in (("zh@example.org", ("请确认订阅", "请打开下面的链接确认订阅", "确认订阅</a>")),
                           ("en@example.org", ("Confirm your subscription", "Open the link below",
                                               "Confirm subscription</a>"))):
        message = mails[address]
        text, page = message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()
        assert words[0] in message["Subject"] and "digest" in message["Subject"] and "示例周报" in message["Subject"]
        assert words[1] in text and "digest" in text and "48" in text
        assert words[2] in page and f'href="{confirmation_link(message)}"' in page and "digest" in page


def test_an_expired_link_says_so_and_changes_nothing(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with serving(settings) as port:
            assert post_signup(port, "late@example.org")[0] == 200
            wait_for(lambda: len(smtp.messages) == 1, "the confirmation mail")
            with store_of(tmp_path) as store:
                reader = store.subscriber("late@example.org")
            old = signup.confirm_token(SECRET, reader.id, "weekly", nonce_of(tmp_path, "late@example.org"),
                                       issued_at=time.time() - 49 * 3600, settings=settings)
            for method, body in (("GET", None), ("POST", b"confirm=subscribe")):
                status, _, page = request(port, method, f"/confirm/{old}", body, {"Content-Type": FORM})
                assert status == 410 and b"Link expired" in page
                assert f'href="{PUBLIC}subscribe?list=weekly&amp;lang=en"'.encode() in page
            with store_of(tmp_path) as store:
                assert store.subscriber("late@example.org").on("weekly").status == "unconfirmed"


def test_a_token_of_one_purpose_never_serves_another(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with serving(settings) as port:
            assert post_signup(port, "reader@example.org")[0] == 200
            wait_for(lambda: len(smtp.messages) == 1, "the confirmation mail")
            confirm = confirmation_link(parsed(smtp.messages[0].data)).rsplit("/", 1)[1]
            with store_of(tmp_path) as store:
                reader = store.subscriber("reader@example.org")
            unsubscribe_token = unsubscribe.sign(reader.id, SECRET)
            forged = confirm[:-2] + ("AA" if not confirm.endswith("AA") else "BB")
            retired = signup.confirm_token(SECRET, reader.id, "retired", nonce_of(tmp_path, "reader@example.org"),
                                           issued_at=time.time(), settings=settings)
            for token in (unsubscribe_token, form_token(port), forged, confirm.split(".")[0], retired):
                for method in ("GET", "POST"):
                    status, _, _ = request(port, method, f"/confirm/{token}", b"confirm=subscribe",
                                           {"Content-Type": FORM})
                    assert status == 400, (token, method)
            for body in (b"List-Unsubscribe=One-Click", b"confirm=unsubscribe"):
                assert request(port, "POST", f"/unsubscribe/{confirm}", body, {"Content-Type": FORM})[0] == 400
            with store_of(tmp_path) as store:
                assert store.subscriber("reader@example.org").on("weekly").status == "unconfirmed"
                assert not store.ledger.is_suppressed("reader@example.org")
            # The genuine token still confirms, and the unsubscribe token still unsubscribes.
            assert request(port, "POST", f"/confirm/{confirm}", b"confirm=subscribe", {"Content-Type": FORM})[0] == 200
            assert request(port, "POST", f"/unsubscribe/{unsubscribe_token}", b"List-Unsubscribe=One-Click",
                           {"Content-Type": FORM})[0] == 200
    assert tokens.read(confirm, "form", SECRET) is None and tokens.read(confirm, "confirm", "other") is None
    assert unsubscribe.verify(confirm, SECRET) is None


def test_every_accepted_post_gets_the_same_bytes(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with serving(settings) as port:
            # An active reader (confirmed), an unconfirmed one, an unsubscribed one.
            post_signup(port, "active@example.org")
            post_signup(port, "pending@example.org")
            post_signup(port, "gone@example.org")
            wait_for(lambda: len(smtp.messages) == 3, "three confirmation mails")
            links = {m.rcpt_tos[0]: confirmation_link(parsed(m.data)) for m in smtp.messages}
            for address in ("active@example.org", "gone@example.org"):
                assert request(port, "POST", path_of(links[address]), b"confirm=subscribe",
                               {"Content-Type": FORM})[0] == 200
            token = unsubscribe.sign(store_id(tmp_path, "gone@example.org"), SECRET)
            assert request(port, "POST", f"/unsubscribe/{token}", b"List-Unsubscribe=One-Click",
                           {"Content-Type": FORM})[0] == 200
            for _ in range(2):
                post_signup(port, "limited@example.org")
            wait_for(lambda: drained(tmp_path), "the outbox")
            before = len(smtp.messages)

            answers = {address: post_signup(port, address) for address in (
                "new@example.org", "pending@example.org", "active@example.org", "gone@example.org",
                "limited@example.org")}
            answers["honeypot"] = post_signup(port, "bot@example.org", extra={"website": "http://spam.example"})
            assert len(set(answers.values())) == 1, answers.keys()
            assert next(iter(answers.values()))[0] == 200

            wait_for(lambda: drained(tmp_path), "the outbox")
            # The active reader gets no second mail; the unsubscribed one is asked and stays unsubscribed.
            assert sorted(m.rcpt_tos[0] for m in smtp.messages[before:]) == [
                "gone@example.org", "limited@example.org", "new@example.org", "pending@example.org"]
            with store_of(tmp_path) as store:
                assert store.subscriber("gone@example.org").on("weekly").status == "unsubscribed"
                assert store.subscriber("active@example.org").on("weekly").status == "active"
                assert store.subscriber("bot@example.org") is None


def store_id(tmp_path: Path, address: str) -> str:
    with store_of(tmp_path) as store:
        return store.subscriber(address).id


def test_an_unsubscribed_reader_who_confirms_is_active_again(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with serving(settings) as port:
            token = unsubscribe.sign(store_id_after_signup(port, tmp_path, smtp, "back@example.org"), SECRET)
            assert request(port, "POST", f"/unsubscribe/{token}", b"List-Unsubscribe=One-Click",
                           {"Content-Type": FORM})[0] == 200
            post_signup(port, "back@example.org")
            wait_for(lambda: len(smtp.messages) == 2, "the second confirmation mail")
            link = confirmation_link(parsed(smtp.messages[1].data))
            assert request(port, "POST", path_of(link), b"confirm=subscribe", {"Content-Type": FORM})[0] == 200
            with store_of(tmp_path) as store:
                assert store.subscriber("back@example.org").on("weekly").status == "active"
                assert not store.ledger.is_suppressed("back@example.org")
                # A bounce is never lifted by a confirmation.
                store.ledger.suppress("back@example.org", reason="550 no such user", source="bounce")
            post_signup(port, "back@example.org")
            wait_for(lambda: drained(tmp_path), "the outbox")
            assert len(smtp.messages) == 2
            with store_of(tmp_path) as store:
                assert store.subscriber("back@example.org").on("weekly").status == "bounced"


def store_id_after_signup(port: int, tmp_path: Path, smtp: FaultySmtpServer, address: str) -> str:
    post_signup(port, address)
    wait_for(lambda: len(smtp.messages) >= 1, "the confirmation mail")
    link = confirmation_link(parsed(smtp.messages[-1].data))
    assert request(port, "POST", path_of(link), b"confirm=subscribe", {"Content-Type": FORM})[0] == 200
    return store_id(tmp_path, address)


def test_confirmation_mails_are_limited_per_address_and_per_client(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(
            tmp_path, smtp.port, signup_extra="  requests_per_client_per_day: 7\n  trusted_proxies: [127.0.0.1]"))
        with serving(settings) as port:
            for _ in range(5):
                assert post_signup(port, "eager@example.org")[0] == 200
            wait_for(lambda: drained(tmp_path), "the outbox")
            assert [m.rcpt_tos[0] for m in smtp.messages] == ["eager@example.org"] * 3
            # Every POST counts against the client, mailed or not: two more reach its limit of seven,
            # and the POSTs after them record nothing; another client is not held back.
            for index in range(4):
                post_signup(port, f"other{index}@example.org")
            post_signup(port, "elsewhere@example.org", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
            wait_for(lambda: drained(tmp_path), "the outbox")
            assert sorted(m.rcpt_tos[0] for m in smtp.messages[3:]) == [
                "elsewhere@example.org", "other0@example.org", "other1@example.org"]
            with store_of(tmp_path) as store:
                assert store.subscriber("other1@example.org").on("weekly").status == "unconfirmed"
                assert store.subscriber("other2@example.org") is None


def test_a_hundred_concurrent_signups(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port,
                                                signup_extra="  requests_per_client_per_day: 1000"))
        with serving(settings) as port:
            token = form_token(port)
            distinct = [f"reader{index:03d}@example.org" for index in range(100)]
            with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
                answers = list(pool.map(lambda address: post_signup(port, address, token=token), distinct,
                                        timeout=60))
                assert {status for status, _ in answers} == {200}
                same = list(pool.map(lambda _: post_signup(port, "Same@example.org", token=token), range(100),
                                     timeout=60))
                assert {status for status, _ in same} == {200}
            wait_for(lambda: drained(tmp_path), "the outbox", timeout=30)
            with store_of(tmp_path) as store:
                assert {s.address for s in store.subscribers(list_name="weekly", status="unconfirmed")} == \
                    {*distinct, "Same@example.org"}
                assert len(store.consents("same@example.org")) == 100
            assert outbox(tmp_path) == {"sent": 103}
            received = [m.rcpt_tos[0] for m in smtp.messages]
            assert sorted(received) == sorted([*distinct, *["Same@example.org"] * 3])


def test_two_servers_on_one_ledger_keep_the_limit_of_each_address(tmp_path):
    """Two `serve` processes (or WSGI workers) share the ledger: only its transaction orders their
    signups, and only the outbox's lease keeps them from both sending a mail."""
    with FaultySmtpServer() as smtp:
        limits = "  mails_per_address_per_day: 1\n  requests_per_client_per_day: 1000"
        settings = load_settings(write_settings(tmp_path, smtp.port, signup_extra=limits))
        addresses = [f"reader{index:02d}@example.org" for index in range(50)]
        with serving(settings) as first, serving(settings) as second:
            token = form_token(first)
            with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
                # Each address four times in a row, two to each server: its POSTs race one another.
                answers = list(pool.map(lambda index: post_signup((first, second)[index % 2], addresses[index // 4],
                                                                  token=token), range(4 * len(addresses)), timeout=60))
            assert {status for status, _ in answers} == {200}
            wait_for(lambda: drained(tmp_path), "the outbox")
        with store_of(tmp_path) as store:
            assert {len(store.consents(address)) for address in addresses} == {4}
        assert sorted(m.rcpt_tos[0] for m in smtp.messages) == addresses


def test_bots_and_hasty_forms_record_nothing(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port, signup_extra="  min_fill_seconds: 30"))
        with serving(settings) as port:
            token = form_token(port)
            status, page = post_signup(port, "bot@example.org", token=token, extra={"website": "x"})
            assert status == 200 and "请查收邮件".encode() not in page and b"Check your mail" in page
            for sent in (token, "", "forged.token"):      # too fast, the snippet's first POST, forged
                status, page = post_signup(port, "hasty@example.org", token=sent, name="Hasty")
                form = lxml.html.fromstring(page).forms[0]
                assert status == 200 and b"Please check the form" in page
                assert form.fields["email"] == "hasty@example.org" and form.fields["name"] == "Hasty"
                assert form.fields["form_token"] not in (sent, "")
            for address, name in (("not an address", ""), ("ok@example.org", "x" * 101),
                                  ("ok@example.org", "line\nbreak")):
                assert post_signup(port, address, token=token, name=name)[0] == 400
            assert post_signup(port, "ok@example.org", token=token, list_name="nosuch")[0] == 400
            # Over the form's bound: 413 from the app, and from waitress beyond the unsubscribe bound.
            for size in (5 * 1024, 20 * 1024):
                body = urlencode({"email": "big@example.org", "name": "x" * size}).encode()
                assert request(port, "POST", "/subscribe", body, {"Content-Type": FORM})[0] == 413
        with store_of(tmp_path) as store:
            assert list(store.subscribers()) == [] and store.consents("hasty@example.org") == []
        assert outbox(tmp_path) == {} and smtp.messages == []


class TagBalance(html.parser.HTMLParser):
    """Fails on an end tag that closes nothing open, and says what is left open."""

    VOID = {"input", "br", "meta", "link", "img", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, (tag, self.open)
        self.open.pop()


def test_the_snippet_posts_the_form_fields_to_the_public_url(tmp_path, capsys):
    with FaultySmtpServer() as smtp:
        path = write_settings(tmp_path, smtp.port, lists="[weekly]", signup_extra="  public_url: https://s.example.org/")
        assert cli.main(["--settings", str(path), "subscribe-form", "--list", "weekly", "--lang", "en"]) == 0
        snippet = capsys.readouterr().out
        checker = TagBalance()
        checker.feed(snippet)
        checker.close()
        assert checker.open == []
        form = lxml.html.fromstring(snippet)
        assert form.tag == "form" and form.get("action") == "https://s.example.org/subscribe"
        assert form.get("method") == "post"
        assert dict(form.fields) == {"email": "", "name": "", "list": "weekly", "lang": "en", "website": ""}
        assert cli.main(["--settings", str(path), "subscribe-form", "--list", "nosuch"]) == 2
        assert "--list" in capsys.readouterr().err
        with serving(load_settings(path)) as port:
            fields = {**dict(form.fields), "email": "static@example.org"}
            status, _, page = request(port, "POST", "/subscribe", urlencode(fields).encode(), {"Content-Type": FORM})
            served = lxml.html.fromstring(page).forms[0]
            assert status == 200 and served.fields["email"] == "static@example.org" and served.fields["form_token"]
            status, _, page = request(port, "POST", "/subscribe", urlencode(dict(served.fields)).encode(),
                                      {"Content-Type": FORM})
            assert status == 200 and b"Check your mail" in page
            wait_for(lambda: len(smtp.messages) == 1, "the confirmation mail")
            assert "https://s.example.org/confirm/" in parsed(smtp.messages[0].data).get_body(("plain",)).get_content()


@pytest.mark.parametrize(("mode", "expected"), [("full", "127.0.0.1"), ("none", None)])
def test_the_consent_keeps_the_client_as_configured(tmp_path, mode, expected):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port, signup_extra=f"  client_address: {mode}"))
        with serving(settings) as port:
            post_signup(port, "reader@example.org")
            wait_for(lambda: len(smtp.messages) == 1, "the confirmation mail")
            path = path_of(confirmation_link(parsed(smtp.messages[0].data)))
            assert request(port, "POST", path, b"confirm=subscribe", {"Content-Type": FORM})[0] == 200
        with store_of(tmp_path) as store:
            (_, _, client, form_url, confirmed), = store.consents("reader@example.org")
            assert client == expected and form_url == f"{PUBLIC}subscribe" and confirmed is not None
            confirmed_client = store.db.execute("SELECT confirmed_client FROM consents").fetchone()[0]
            assert confirmed_client == expected


def test_mails_queued_while_the_outbox_was_down_go_out_when_it_starts(tmp_path):
    with FaultySmtpServer(rejected_recipients={"nobody@example.org": "550 5.1.1 no such user"}) as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with serving(settings, mailer=False) as port:
            post_signup(port, "waiting@example.org")
            post_signup(port, "nobody@example.org")
        assert outbox(tmp_path) == {"pending": 2} and smtp.messages == []
        with serving(settings) as port:
            wait_for(lambda: drained(tmp_path), "the outbox")
        assert [m.rcpt_tos for m in smtp.messages] == [("waiting@example.org",)]
        assert outbox(tmp_path) == {"sent": 1, "failed": 1}


def quick_retries(path: Path, attempts: int) -> Settings:
    """The settings at `path` with the one retry policy made quick: `attempts` tries, waits below 0.1 s."""
    with path.open("a", encoding="utf-8") as file:
        file.write(f"retry: {{attempts: {attempts}, base_delay_seconds: 0.05, max_delay_seconds: 0.1}}\n")
    return load_settings(path)


@contextlib.contextmanager
def outbox_running(settings: Settings) -> Iterator[None]:
    """The outbox alone, at its default wake interval: sooner wakes come from the retry policy only."""
    mailer = SignupMailer(settings, threading.Event())
    mailer.start()
    try:
        yield
    finally:
        mailer.stop(TIMEOUT)


def test_a_deferred_mail_waits_and_stops_as_the_retry_settings_say(tmp_path):
    later = "451 4.3.0 try again later"
    with FaultySmtpServer(rcpt_replies={"slow@example.org": [later, later, None],
                                        "never@example.org": [later] * 10}) as smtp:
        settings = quick_retries(write_settings(tmp_path, smtp.port), attempts=4)
        with serving(settings, mailer=False) as port:
            post_signup(port, "slow@example.org")
            post_signup(port, "never@example.org")
        # Three waits of at most 0.1 s each: well within TIMEOUT only if the outbox wakes when the
        # policy's backoff ends, not at its WAKE_SECONDS of 5.
        with outbox_running(settings):
            wait_for(lambda: drained(tmp_path), "the outbox")
        assert [m.rcpt_tos for m in smtp.messages] == [("slow@example.org",)]
        assert smtp.rcpt_attempts == {"slow@example.org": 3, "never@example.org": 4}
        assert outbox(tmp_path) == {"sent": 1, "failed": 1}


def test_each_mail_is_recorded_sent_before_the_next_is_handed_over(tmp_path):
    with FaultySmtpServer(hold_after_messages=1) as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with serving(settings, mailer=False) as port:
            post_signup(port, "first@example.org")
            post_signup(port, "second@example.org")
        with outbox_running(settings):
            # The relay keeps the second mail unanswered: a crash now must send neither again (the second
            # is claimed, `sending`: a later outbox fails it).
            wait_for(lambda: len(smtp.withheld) == 1, "the second mail to be held")
            with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite3")) as db:
                rows = db.execute("SELECT address, status, attempts FROM signup_mails ORDER BY id").fetchall()
            assert rows == [("first@example.org", "sent", 1), ("second@example.org", "sending", 1)]
            smtp.release()
            wait_for(lambda: drained(tmp_path), "the outbox")
        # The held mail's hand-over is uncertain: failed, never sent twice.
        assert [m.rcpt_tos for m in smtp.messages] == [("first@example.org",)]
        assert outbox(tmp_path) == {"sent": 1, "failed": 1}


def test_a_relay_limiting_the_sender_costs_no_attempt(tmp_path):
    with FaultySmtpServer(mail_replies=["450 4.7.1 sender rate limited"] * 2) as smtp:
        settings = quick_retries(write_settings(tmp_path, smtp.port), attempts=1)
        with serving(settings, mailer=False) as port:
            post_signup(port, "patient@example.org")
        with outbox_running(settings):
            wait_for(lambda: drained(tmp_path), "the outbox")
        assert [m.rcpt_tos for m in smtp.messages] == [("patient@example.org",)]
        with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite3")) as db:
            assert db.execute("SELECT status, attempts FROM signup_mails").fetchall() == [("sent", 1)]
        assert smtp.connections_opened == 3


@contextlib.contextmanager
def outbox_waking(settings: Settings) -> Iterator[None]:
    """The outbox alone, waking every 0.05 s: a mail left behind comes up again at once."""
    mailer = SignupMailer(settings, threading.Event(), wake_seconds=0.05)
    mailer.start()
    try:
        yield
    finally:
        mailer.stop(TIMEOUT)


def mails(tmp_path: Path) -> dict[str, tuple[str, int, str | None]]:
    """The outbox's mails as {address: (status, attempts, last error)}."""
    with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite3")) as db:
        return {row[0]: tuple(row[1:]) for row in db.execute(
            "SELECT address, status, attempts, last_error FROM signup_mails")}


def test_a_mail_whose_outcome_could_not_be_recorded_is_failed_never_sent_again(tmp_path, caplog):
    """The relay took the mail, then the ledger was locked (a long import) past
    ledger.lock_timeout_seconds when the outbox came to record it: the mail was claimed `sending` before
    the hand-over, so the next wake fails it instead of sending it again."""
    with FaultySmtpServer(hold_after_messages=0) as smtp:
        path = write_settings(tmp_path, smtp.port)
        path.write_text(path.read_text().replace("ledger: {path:", "ledger: {lock_timeout_seconds: 0.2, path:"))
        settings = load_settings(path)
        with serving(settings, mailer=False) as port:
            post_signup(port, "once@example.org")
        with outbox_waking(settings):
            wait_for(lambda: len(smtp.withheld) == 1, "the mail to be handed over")
            with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite3", isolation_level=None)) as db:
                db.execute("BEGIN IMMEDIATE")
                smtp.release()
                wait_for(lambda: any("outbox failed" in record.getMessage() for record in caplog.records),
                         "the outbox to fail recording the attempt")
                db.execute("ROLLBACK")
            wait_for(lambda: drained(tmp_path), "the outbox")
        assert smtp.messages == [] and len(smtp.withheld) == 1
        status, attempts, error = mails(tmp_path)["once@example.org"]
        assert attempts == 1 and "uncertain" in error


def test_a_mail_a_crash_left_sending_is_failed_not_sent(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with serving(settings, mailer=False) as port:
            post_signup(port, "crashed@example.org")
            post_signup(port, "waiting@example.org")
        with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite3")) as db, db:
            # As an outbox that died during the hand-over leaves it.
            db.execute("UPDATE signup_mails SET status = 'sending', attempts = 1 WHERE address = 'crashed@example.org'")
        with outbox_running(settings):
            wait_for(lambda: drained(tmp_path), "the outbox")
        assert [m.rcpt_tos for m in smtp.messages] == [("waiting@example.org",)]
        assert mails(tmp_path)["crashed@example.org"][:2] == ("failed", 1)
        assert mails(tmp_path)["waiting@example.org"][:2] == ("sent", 1)


def test_a_mail_is_not_sent_once_its_address_was_suppressed_or_erased_while_it_waited(tmp_path):
    """The outbox read its page of mails; then, while the relay held the first, the publisher
    unsubscribed one address, an issue's bounce suppressed another and a third reader was erased."""
    with FaultySmtpServer(hold_after_messages=0) as smtp:
        path = write_settings(tmp_path, smtp.port)
        settings = load_settings(path)
        addresses = ("held", "told", "bounced", "gone", "kept")
        with serving(settings, mailer=False) as port:
            for address in addresses:
                post_signup(port, f"{address}@example.org")
        with outbox_running(settings):
            wait_for(lambda: len(smtp.withheld) == 1, "the first mail to be held")
            assert cli.main(["--settings", str(path), "subscribers", "unsubscribe", "told@example.org"]) == 0
            assert cli.main(["--settings", str(path), "subscribers", "remove", "gone@example.org"]) == 0
            with Ledger(tmp_path / "ledger.sqlite3") as ledger, ledger.transaction():
                ledger.suppress("bounced@example.org", reason="550 5.1.1 no such user", source="bounce")
            smtp.release()
            wait_for(lambda: drained(tmp_path), "the outbox")
        assert [m.rcpt_tos for m in smtp.messages] == [("kept@example.org",)]
        found = mails(tmp_path)
        assert "gone@example.org" not in found
        for address, source in (("told", "command"), ("bounced", "bounce")):
            status, attempts, error = found[f"{address}@example.org"]
            assert (status, attempts) == ("failed", 0) and source in error


def test_confirming_one_link_makes_the_older_links_of_that_list_useless(tmp_path):
    """A reader asked twice and confirmed with the second mail, then left with the one-click link: the
    first mail's link must not put them back on the list."""
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with serving(settings) as port:
            post_signup(port, "twice@example.org")
            post_signup(port, "twice@example.org")
            wait_for(lambda: len(smtp.messages) == 2, "the two confirmation mails")
            first, second = (path_of(confirmation_link(parsed(m.data))) for m in smtp.messages)
            assert confirm(port, second)[0] == 200
            one_click(port, tmp_path, "twice@example.org")
            assert confirm(port, first)[0] == 410
        with store_of(tmp_path) as store:
            assert store.subscriber("twice@example.org").on("weekly").status == "unsubscribed"
            assert store.ledger.is_suppressed("twice@example.org")


def test_serve_mails_signups_logs_no_address_and_stops_on_sigterm(tmp_path):
    with FaultySmtpServer() as smtp:
        path = write_settings(tmp_path, smtp.port)
        command = [sys.executable, "-m", "distributor", "--settings", str(path), "serve", "--port", "0"]
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert select.select([process.stdout], [], [], TIMEOUT)[0], "the server printed no banner"
            port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", process.stdout.readline())[1])
            assert post_signup(port, "private.reader@example.org")[0] == 200
            wait_for(lambda: len(smtp.messages) == 1, "the confirmation mail")
            link = confirmation_link(parsed(smtp.messages[0].data))
            assert request(port, "GET", path_of(link))[0] == 200
            assert request(port, "POST", path_of(link), b"confirm=subscribe", {"Content-Type": FORM})[0] == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=TIMEOUT) == 0
            log = process.stderr.read()
        finally:
            process.kill()
            process.wait(timeout=TIMEOUT)
    token = link.rsplit("/", 1)[1]
    assert '"POST /subscribe HTTP/1.1" 200' in log and log.count("/confirm/<redacted>") == 2
    assert "@" not in log and "private" not in log and token not in log and token.split(".")[1] not in log


def test_serve_refuses_lists_without_a_public_url(tmp_path):
    path = write_settings(tmp_path, 1, unsubscribe_url="https://example.org/u?t={token}")
    result = subprocess.run([sys.executable, "-m", "distributor", "--settings", str(path), "serve", "--port", "0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "signup.public_url" in result.stderr


def test_log_lines_hold_no_confirmation_token():
    line = '127.0.0.1 "GET /confirm/eyJhYmMi.SECRETMAC HTTP/1.1" 200 and /%63onfirm/abc'
    assert "SECRETMAC" not in serve.redact_tokens(line) and "abc" not in serve.redact_tokens(line)
    assert serve.redact_tokens("/subscribe?list=weekly") == "/subscribe?list=weekly"


@pytest.mark.parametrize(("unsubscribe_url", "public_url"), [
    ("https://example.org/unsubscribe/{token}", "https://example.org/"),
    ("https://example.org/news/letters/unsubscribe/{token}", "https://example.org/news/letters/"),
    ("https://example.org/unsubscribe?t={token}", None),
    ("https://example.org/unsubscribe/x/{token}", None)])
def test_the_public_url_is_derived_from_the_unsubscribe_url(tmp_path, unsubscribe_url, public_url):
    settings = load_settings(write_settings(tmp_path, 1, unsubscribe_url=unsubscribe_url))
    assert signup.public_url(settings) == public_url


@pytest.mark.parametrize("subject", ["请确认订阅 示例周报（weekly）" * 3, "Confirm your subscription to Ünïcode Weekly",
                                     "plain ASCII", "😀" * 30])
def test_subjects_are_encoded_words_within_the_line_length(subject):
    header = f"Subject: {signup.encoded_words(subject)}"
    assert header.isascii() and all(len(line) <= 76 for line in header.split("\r\n"))
    assert str(parsed(f"{header}\r\n\r\nbody\r\n".encode())["Subject"]) == subject


def ledger_rows(tmp_path: Path) -> dict[str, int]:
    """How many rows each table of the ledger holds."""
    with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite3")) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in tables}


def one_click(port: int, tmp_path: Path, address: str) -> None:
    token = unsubscribe.sign(store_id(tmp_path, address), SECRET)
    status, _, _ = request(port, "POST", f"/unsubscribe/{token}", b"List-Unsubscribe=One-Click", {"Content-Type": FORM})
    assert status == 200


def confirm(port: int, link_path: str) -> tuple[int, bytes]:
    status, _, body = request(port, "POST", link_path, b"confirm=subscribe", {"Content-Type": FORM})
    return status, body


def control_mail_queued(folder: Path, *, target_active: bool) -> bool:
    """A client with a budget of three POSTs two addresses of its own, the target, then a third of its
    own: whether that last one got a mail."""
    folder.mkdir()
    settings = load_settings(write_settings(folder, 1, signup_extra="  requests_per_client_per_day: 3"))
    if target_active:
        with store_of(folder) as store, store.ledger.transaction():
            store.save("target@example.org")
            store.set_status("target@example.org", "weekly", "active", source="import")
    with serving(settings, mailer=False) as port:
        token = form_token(port)
        for address in ("own1@example.org", "own2@example.org", "target@example.org", "own3@example.org"):
            assert post_signup(port, address, token=token)[0] == 200
    with contextlib.closing(sqlite3.connect(folder / "ledger.sqlite3")) as db:
        return db.execute("SELECT COUNT(*) FROM signup_mails WHERE address = 'own3@example.org'").fetchone()[0] == 1


def test_the_client_budget_does_not_tell_whether_an_address_is_subscribed(tmp_path):
    outcomes = {active: control_mail_queued(tmp_path / str(active), target_active=active) for active in (False, True)}
    assert outcomes == {False: False, True: False}


def test_a_client_past_its_budget_records_nothing(tmp_path):
    settings = load_settings(write_settings(tmp_path, 1, signup_extra="  requests_per_client_per_day: 2"))
    with serving(settings, mailer=False) as port:
        token = form_token(port)
        answers = {post_signup(port, address, token=token) for address in ("a@example.org", "b@example.org")}
        before = ledger_rows(tmp_path)
        assert before["signup_requests"] == 2 and before["subscriber_ids"] == 2
        for index in range(5):
            answers.add(post_signup(port, f"more{index}@example.org", token=token, name="More"))
        answers.add(post_signup(port, "a@example.org", token=token))
        assert ledger_rows(tmp_path) == before
    assert len(answers) == 1 and next(iter(answers))[0] == 200


def test_unconfirmed_signups_past_the_links_life_are_erased_when_the_outbox_starts(tmp_path):
    """With links good for an hour, a signup of two hours ago stays all the same: the per-address
    limit counts its mails for a day."""
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port, signup_extra="  confirm_hours: 1"))
        for hours, address, status in ((49, "stale@example.org", "unconfirmed"), (49, "kept@example.org", "active"),
                                       (2, "recent@example.org", "unconfirmed")):
            then = time.time() - hours * 3600
            with Ledger(tmp_path / "ledger.sqlite3", clock=lambda then=then: then) as ledger, ledger.transaction():
                store = SubscriberStore(ledger)
                store.claim_id(address, f"id-{address}")
                store.save(address)
                store.set_status(address, "weekly", status, source="signup")
                store.record_request(address, "weekly", nonce=address, client=None, form_url=None)
        with serving(settings, mailer=False) as port:
            post_signup(port, "fresh@example.org")
        assert store_id(tmp_path, "stale@example.org")
        with serving(settings):
            wait_for(lambda: "stale@example.org" not in ledger_rows_of(tmp_path), "the purge")
            wait_for(lambda: drained(tmp_path), "the outbox")
        assert ledger_rows_of(tmp_path) == {"kept@example.org", "recent@example.org", "fresh@example.org"}
        with store_of(tmp_path) as store:
            assert store.subscriber_by_id("id-stale@example.org") is None
            assert store.consents("stale@example.org") == [] and store.history("stale@example.org") == []
    with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite3")) as db:
        assert db.execute("SELECT status, length(message) FROM signup_mails").fetchall() == [("sent", 0)]


def ledger_rows_of(tmp_path: Path) -> set[str]:
    with store_of(tmp_path) as store:
        return {reader.address for reader in store.subscribers()}


def test_a_used_link_never_confirms_a_strangers_later_request(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port, signup_extra="  mails_per_address_per_day: 1"))
        with serving(settings) as port:
            post_signup(port, "reader@example.org")
            wait_for(lambda: len(smtp.messages) == 1, "the confirmation mail")
            link = path_of(confirmation_link(parsed(smtp.messages[0].data)))
            assert confirm(port, link)[0] == 200
            one_click(port, tmp_path, "reader@example.org")
            # A stranger posts the address again: a new request, not mailed (the address's limit).
            post_signup(port, "reader@example.org")
            with store_of(tmp_path) as store:
                assert len(store.consents("reader@example.org")) == 2
            status, body = confirm(port, link)
            assert status == 410 and b"Link used" in body
            wait_for(lambda: drained(tmp_path), "the outbox")
        assert len(smtp.messages) == 1
        with store_of(tmp_path) as store:
            assert store.subscriber("reader@example.org").on("weekly").status == "unsubscribed"
            assert store.ledger.suppression("reader@example.org")[2] == "one-click"
            assert [c[4] is None for c in store.consents("reader@example.org")] == [False, True]


def test_the_confirmation_mail_holds_no_text_typed_in_the_form(tmp_path):
    spam = "Cheap pills at spam.example"
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with serving(settings) as port:
            for language in ("en", "zh"):
                post_signup(port, f"victim-{language}@example.org", name=spam, extra={"lang": language})
            wait_for(lambda: len(smtp.messages) == 2, "the confirmation mails")
        for received in smtp.messages:
            message = parsed(received.data)
            assert re.search(rb"^To: victim-(en|zh)@example\.org\r$", received.data, re.MULTILINE)
            assert message["To"].addresses[0].display_name == ""
            text, page = message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()
            assert "spam" not in text + page + str(message["Subject"])
            assert text.startswith(("Hello,", "你好，"))
        with store_of(tmp_path) as store:
            assert store.subscriber("victim-en@example.org").name == spam


def test_a_confirmation_never_lifts_the_publishers_suppression(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with serving(settings) as port:
            store_id_after_signup(port, tmp_path, smtp, "stopped@example.org")
            post_signup(port, "pending@example.org")
            wait_for(lambda: len(smtp.messages) == 2, "the second confirmation mail")
            link = path_of(confirmation_link(parsed(smtp.messages[1].data)))
            with store_of(tmp_path) as store:
                for address in ("stopped@example.org", "pending@example.org"):
                    store.ledger.suppress(address, reason="publisher", source="command")
            # A signup of an address the publisher stopped mails nothing; a link mailed before confirms nothing.
            post_signup(port, "stopped@example.org")
            status, body = confirm(port, link)
            assert status == 403 and b"Cannot subscribe" in body
            wait_for(lambda: drained(tmp_path), "the outbox")
        assert len(smtp.messages) == 2
        with store_of(tmp_path) as store:
            for address in ("stopped@example.org", "pending@example.org"):
                assert store.ledger.suppression(address)[2] == "command"
                assert store.subscriber(address).on("weekly").status == "unsubscribed"


def test_a_mailbox_that_does_not_exist_is_suppressed_as_a_bounce(tmp_path):
    refusals = {"nobody@example.org": "550 5.1.1 no such user", "back@example.org": "550 5.1.1 no such user",
                "policy@example.org": "550 5.7.1 refused by policy"}
    with FaultySmtpServer(rejected_recipients=refusals) as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with store_of(tmp_path) as store, store.ledger.transaction():
            store.save("back@example.org")
            store.set_status("back@example.org", "weekly", "active", source="import")
        with serving(settings) as port:
            one_click(port, tmp_path, "back@example.org")
            for address in refusals:
                post_signup(port, address)
            wait_for(lambda: drained(tmp_path), "the outbox")
            assert outbox(tmp_path) == {"failed": 3} and smtp.messages == []
            with store_of(tmp_path) as store:
                for address in ("nobody@example.org", "back@example.org"):
                    # The bounce replaces the reader's one-click suppression: no confirmation lifts it.
                    _, reason, source, _ = store.ledger.suppression(address)
                    assert source == "bounce" and "5.1.1" in reason
                assert store.subscriber("nobody@example.org").on("weekly").status == "bounced"
                assert store.subscriber("back@example.org").on("weekly").status == "unsubscribed"
                assert not store.ledger.is_suppressed("policy@example.org")
                back = store.subscriber("back@example.org").id
            token = signup.confirm_token(SECRET, back, "weekly", nonce_of(tmp_path, "back@example.org"),
                                         issued_at=time.time(), settings=settings)
            status, body = confirm(port, f"/confirm/{token}")
            assert status == 403 and "无法订阅".encode() in body        # the reader's language: the site's
        with store_of(tmp_path) as store:
            assert store.ledger.suppression("back@example.org")[2] == "bounce"


def test_a_confirmation_post_with_too_many_fields_is_refused(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port))
        with serving(settings) as port:
            post_signup(port, "many@example.org")
            wait_for(lambda: len(smtp.messages) == 1, "the confirmation mail")
            link = path_of(confirmation_link(parsed(smtp.messages[0].data)))
            body = "&".join(["confirm=subscribe", *(f"f{index}=x" for index in range(16))]).encode()
            status, _, page = request(port, "POST", link, body, {"Content-Type": FORM})
            assert status == 400 and b"Bad request" in page
            assert confirm(port, link)[0] == 200


def test_a_form_sent_back_after_the_minimum_fill_time_is_accepted_and_one_sooner_is_not(tmp_path):
    settings = load_settings(write_settings(tmp_path, 1, signup_extra="  min_fill_seconds: 1.0"))
    with serving(settings, mailer=False) as port:
        token = form_token(port)
        issued = tokens.read(token, "form", SECRET)
        status, page = post_signup(port, "patient@example.org", token=token)
        assert issued.age(time.time()) < 1.0, "the POST was not sooner than the minimum"
        assert status == 200 and b"Please check the form" in page
        assert outbox(tmp_path) == {}
        wait_for(lambda: issued.age(time.time()) >= 1.0, "the minimum fill time")
        status, page = post_signup(port, "patient@example.org", token=token)
        assert status == 200 and b"Check your mail" in page
    assert outbox(tmp_path) == {"pending": 1}


def test_the_form_offers_the_format_of_a_list_sent_by_several_channels(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = load_settings(write_settings(tmp_path, smtp.port, text="{lists: [weekly]}"))
        with serving(settings) as port:
            _, _, page = request(port, "GET", "/subscribe?list=weekly&lang=en")
            form = lxml.html.fromstring(page).forms[0]
            assert [option.get("value") for option in form.inputs["format"]] == ["email", "text"]
            assert "Plain text" in page.decode() and b"<script" not in page
            _, _, page = request(port, "GET", "/subscribe?list=digest")
            assert "format" not in lxml.html.fromstring(page).forms[0].fields
            for list_name, chosen in (("digest", "text"), ("weekly", "fax")):
                status, page = post_signup(port, "reader@example.org", list_name=list_name, extra={"format": chosen})
                assert status == 400 and b"Please choose one of the formats" in page
            assert ledger_rows_of(tmp_path) == set()
            post_signup(port, "reader@example.org", extra={"format": "text"})
            post_signup(port, "other@example.org")
            wait_for(lambda: len(smtp.messages) == 2, "the confirmation mails")
            with store_of(tmp_path) as store:
                on = store.subscriber("reader@example.org").on("weekly")
                assert (on.status, on.format) == ("unconfirmed", "text")
            for received in smtp.messages:
                assert confirm(port, path_of(confirmation_link(parsed(received.data))))[0] == 200
            with store_of(tmp_path) as store:
                for address, chosen in (("reader@example.org", "text"), ("other@example.org", "email")):
                    on = store.subscriber(address).on("weekly")
                    assert (on.status, on.format) == ("active", chosen)
            # A reader who left and signs up again in the other format reads it so once they confirm.
            one_click(port, tmp_path, "other@example.org")
            post_signup(port, "other@example.org", extra={"format": "text"})
            wait_for(lambda: len(smtp.messages) == 3, "the third confirmation mail")
            assert confirm(port, path_of(confirmation_link(parsed(smtp.messages[2].data))))[0] == 200
        with store_of(tmp_path) as store:
            on = store.subscriber("other@example.org").on("weekly")
            assert (on.status, on.format) == ("active", "text")


def test_a_mail_made_with_an_id_another_post_beat_is_made_again_with_the_addresss_id(tmp_path):
    """Two first POSTs of one address race: each makes its mail with an id of its own before the
    transaction, and only the first to commit gives the address its id. The other's mail is made again."""
    settings = load_settings(write_settings(tmp_path, 1))
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        pages = SignupPages(ledger, threading.Lock(), settings, SECRET)
        store = SubscriberStore(ledger)
        with ledger.transaction():
            store.claim_id("raced@example.org", "the-winners-id")
        form = SignupForm("raced@example.org", None, "weekly", "en", None)
        with ledger.transaction():
            made = Confirmation("the-losers-id", "raced@example.org", b"a mail with the loser's id")
            assert pages._record(form, "127.0.0.1", f"{PUBLIC}subscribe", "nonce-1", made) == "mail"
        (mail,) = store.mails_to_send(10)
    link = confirmation_link(parsed(mail.message))
    assert tokens.read(link.rsplit("/", 1)[1], "confirm", SECRET).values == ("the-winners-id", "weekly", "nonce-1")

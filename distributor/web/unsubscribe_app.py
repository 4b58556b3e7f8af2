"""The unsubscribe web application (WSGI): one-click unsubscribes (RFC 8058) and a confirmation page.

`GET /unsubscribe/<token>` shows a page with a button and changes nothing, so link scanners
cannot unsubscribe anyone; `POST` to the same URL with `List-Unsubscribe=One-Click` (urlencoded
or multipart) or from the page's button suppresses the address at once. `GET /healthz` answers
a load balancer. The token holds an opaque subscriber id, never an address, and no page or log
line here names one. Any WSGI server can run it, e.g. `gunicorn 'distributor.web.unsubscribe_app:create_app()'`
(settings from $DISTRIBUTOR_SETTINGS); `distributor serve` runs it on waitress. It trusts no server
to have checked Content-Length: a length that is not a plain number gets 400 and one over
MAX_BODY_BYTES 413, and neither body is read.
"""
from __future__ import annotations

import email.parser
import email.policy
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs

from distributor.audience import unsubscribe
from distributor.ledger.store import DATABASE_ERRORS, Ledger, open_ledger
from distributor.ledger.subscribers import SubscriberStore
from distributor.render.templating import environment
from distributor.settings import Settings, load_settings, secret_from_env
from distributor.web import preferences_page, signup_pages

MAX_BODY_BYTES = 16 * 1024     # a one-click POST or the page's button is a few dozen bytes
PAGE_FIELD, PAGE_VALUE = "confirm", "unsubscribe"   # the name and value of the page's button
_UNSUBSCRIBE_PATH = re.compile(r"/unsubscribe/([^/]{1,512})")
_REASONS = {"one-click": "List-Unsubscribe one-click", "page": "unsubscribe page"}
_WORDS = {
    "zh": {
        "confirm": ("确认退订", "确认不再接收 {site} 的邮件？点击下面的按钮即可退订。"), "button": "退订",
        "done": ("已退订", "你已退订 {site}，今后不会再收到这份邮件。"),
        "invalid": ("链接无效", "这个退订链接无效或不完整。请打开邮件中的完整链接，或直接回复邮件要求退订。"),
        "incomplete": ("未退订", "请求中没有退订确认，没有做任何更改。请点击退订页面上的按钮。"),
        "not_found": ("页面不存在", "这里没有你要找的页面。"),
        "method": ("不支持的请求", "这个地址不支持此请求方法。"),
        "too_large": ("请求过大", "请求内容过大，没有做任何更改。"),
        "unavailable": ("暂时无法处理", "服务暂时无法处理请求，没有做任何更改。请稍后再试。"),
    },
    "en": {
        "confirm": ("Unsubscribe", "Stop receiving {site}? Press the button below to unsubscribe."),
        "button": "Unsubscribe",
        "done": ("Unsubscribed", "You are unsubscribed from {site} and will not receive it again."),
        "invalid": ("Invalid link", "This unsubscribe link is invalid or incomplete. Open the full link from "
                                    "the email, or reply to the email to ask to be unsubscribed."),
        "incomplete": ("Not unsubscribed", "The request did not confirm the unsubscribe; nothing was changed. "
                                           "Please press the button on the unsubscribe page."),
        "not_found": ("Not found", "There is no page here."),
        "method": ("Method not allowed", "This address does not accept that request method."),
        "too_large": ("Request too large", "The request was too large; nothing was changed."),
        "unavailable": ("Try again later", "The service cannot handle the request right now; nothing was "
                                           "changed. Please try again later."),
    },
}
_SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self';"
                                " frame-ancestors 'none'"),
)
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Response:
    status: str
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class UnsubscribeApp:
    """The WSGI application over `ledger`; one lock serialises the ledger calls of all request threads."""

    def __init__(self, ledger: Ledger, secret: str, settings: Settings):
        self.ledger = ledger
        self.secret = secret
        self.settings = settings
        self._lock = threading.Lock()
        language = settings.site.language.split("-")[0]
        self.language = language if language in _WORDS else "en"
        self.signup = signup_pages.SignupPages(ledger, self._lock, settings, secret)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        response = self.respond(environ)
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body))),
                   *_SECURITY_HEADERS, *response.headers]
        start_response(response.status, headers)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else response.body]

    def close(self) -> None:
        self.ledger.close()

    def respond(self, environ: dict) -> Response:
        """Route one request to its answer."""
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                return self._page("405 Method Not Allowed", "method", headers=(("Allow", "GET, HEAD"),))
            return Response("200 OK", b"ok\n", "text/plain; charset=utf-8")
        if signup_pages.is_signup_path(path):
            page = self.signup.respond(environ)
            return Response(page.status, page.body, headers=page.headers)
        match = _UNSUBSCRIBE_PATH.fullmatch(path)
        if match is None:
            return self._page("404 Not Found", "not_found")
        if method not in ("GET", "HEAD", "POST"):
            return self._page("405 Method Not Allowed", "method", headers=(("Allow", "GET, HEAD, POST"),))
        try:
            subscriber = self._subscriber(match[1])
            if subscriber is None:
                return self._page("400 Bad Request", "invalid")
            if method == "POST":
                return self._unsubscribe(environ, *subscriber)
            return self._page_for(subscriber[0])
        except DATABASE_ERRORS:
            _log.exception("the ledger cannot answer")
            return self._page("503 Service Unavailable", "unavailable", headers=(("Retry-After", "30"),))

    def _subscriber(self, token: str) -> tuple[str, str] | None:
        """Return (subscriber id, address) for a genuine token of a known subscriber, else None."""
        subscriber_id = unsubscribe.verify(token, self.secret)
        if subscriber_id is None:
            return None
        with self._lock:
            address = self.ledger.address_for(subscriber_id)
        return (subscriber_id, address) if address else None

    def _unsubscribe(self, environ: dict, subscriber_id: str, address: str) -> Response:
        announced = environ.get("CONTENT_LENGTH") or "0"
        if not (announced.isascii() and announced.isdigit()):    # "-1", "+5", "1e3", "٢٦"
            return self._page("400 Bad Request", "incomplete")
        # More digits than the limit has is too large, and is never turned into a (huge) number.
        if len(announced.lstrip("0")) > len(str(MAX_BODY_BYTES)) or int(announced) > MAX_BODY_BYTES:
            return self._page("413 Content Too Large", "too_large")
        values = form_values(environ.get("CONTENT_TYPE", ""), environ["wsgi.input"].read(int(announced)))
        source = unsubscribe_source(first_values(values))
        if source is None and preferences_page.is_preferences_post(values):
            return self._save_preferences(values, subscriber_id, address)
        if source is None:
            return self._page("400 Bad Request", "incomplete")
        with self._lock:
            self.ledger.suppress(address, reason=_REASONS[source], source=source)
        _log.info("unsubscribed subscriber %s (%s)", subscriber_id, source)
        return self._page("200 OK", "done")

    def _page_for(self, subscriber_id: str) -> Response:
        """The page of a GET: the preferences of a reader in the subscriber store, else the button alone."""
        with self._lock:
            subscriber = SubscriberStore(self.ledger).subscriber_by_id(subscriber_id)
            offered = preferences_page.offered_lists(self.settings)
            shown = preferences_page.preferences(self.ledger, subscriber, offered) if subscriber else None
        if shown is None:
            return self._page("200 OK", "confirm", template="web/confirm.html")
        return self._preferences_page("preferences", shown)

    def _save_preferences(self, values: dict[str, list[str]], subscriber_id: str, address: str) -> Response:
        """Save the preferences form in one transaction; refuse (400, nothing changed) a list or format
        the page does not offer, or a reader outside the store."""
        offered = preferences_page.offered_lists(self.settings)
        choice = preferences_page.parse_choice(values, offered)
        if choice is None:
            return Response("400 Bad Request", preferences_page.refusal(self.settings, self.language).encode("utf-8"))
        with self._lock:
            subscriber = preferences_page.save(self.ledger, address, choice, offered)
            shown = preferences_page.preferences(self.ledger, subscriber, offered) if subscriber else None
        if shown is None:
            return self._page("400 Bad Request", "incomplete")
        _log.info("saved the preferences of subscriber %s", subscriber_id)
        return self._preferences_page("saved", shown)

    def _preferences_page(self, what: str, shown: preferences_page.Preferences) -> Response:
        words = _WORDS[self.language]
        page = preferences_page.render(self.settings, self.language, shown, what, button=str(words["button"]),
                                       field=PAGE_FIELD, value=PAGE_VALUE)
        return Response("200 OK", page.encode("utf-8"))

    def _page(self, status: str, what: str, *, template: str = "web/message.html",
              headers: tuple[tuple[str, str], ...] = ()) -> Response:
        words = _WORDS[self.language]
        heading, message = words[what]
        site = self.settings.site.name
        page = environment(self.settings.channels.email.template_dir).get_template(template).render(
            language=self.language, site_name=site, heading=heading, message=message.format(site=site),
            button=words["button"], field=PAGE_FIELD, value=PAGE_VALUE)
        return Response(status, page.encode("utf-8"), headers=headers)


def form_values(content_type: str, body: bytes) -> dict[str, list[str]]:
    """Return every value of each field of a form body, multipart/form-data or urlencoded, in order (the
    preferences form sends one `list` per ticked list)."""
    if content_type.split(";")[0].strip().lower() == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if not message.is_multipart():
            return {}
        fields: dict[str, list[str]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields.setdefault(name, []).append(payload.decode("utf-8", "replace"))
        return fields
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def first_values(fields: dict[str, list[str]]) -> dict[str, str]:
    """Keep the first value of each field: what the one-click and button POSTs are read by."""
    return {name: values[0] for name, values in fields.items()}


def unsubscribe_source(fields: dict[str, str]) -> str | None:
    """Return how the POST asked to unsubscribe ("one-click" or "page"), or None if it did not."""
    if fields.get("List-Unsubscribe", "").strip().lower() == "one-click":
        return "one-click"
    if fields.get(PAGE_FIELD) == PAGE_VALUE:
        return "page"
    return None


def create_app(settings: Settings | None = None) -> UnsubscribeApp:
    """Return the application over the ledger of `settings` (read from $DISTRIBUTOR_SETTINGS when
    None); the signing secret must be in the environment variable the settings name."""
    settings = settings or load_settings(os.environ.get("DISTRIBUTOR_SETTINGS"))
    secret = secret_from_env(settings.unsubscribe_secret_env, "unsubscribe links")
    return UnsubscribeApp(open_ledger(settings.ledger), secret, settings)

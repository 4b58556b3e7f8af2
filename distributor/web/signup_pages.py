"""The signup pages of `distributor serve`: the form, its POST, and the confirmation link.

`GET /subscribe[?list=NAME][&lang=zh|en]` serves the form (no script): `email`, `name`, `list`, the
`format` when a list is sent by several channels (email or plain text), the language, a signed form
token holding the time it was served, and a honeypot input hidden by CSS.
`POST /subscribe` is checked at the edge (size, fields, allow lists); a filled honeypot gets the
"check your mail" page and nothing else; a form token missing, forged, expired or younger than
`signup.min_fill_seconds` gets the form back, filled in, with a fresh token (what the first POST
of the `subscribe-form` snippet gets). Any other POST records the request in one ledger transaction
(the decisions are distributor.audience.signup's; a client past its budget has nothing recorded) and
answers the very same "check your mail" page whatever it decided. The mail itself leaves from the
outbox (web.signup_mailer), woken by `wake`: no POST waits for the relay.

`GET /confirm/<token>` shows a button and changes nothing (mail scanners follow links); its POST
confirms. Neither page nor log line names an address.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

from distributor import registry
from distributor.audience import signup, tokens
from distributor.audience.lists import formats_offered, known_lists, lists_by_channel
from distributor.ledger.store import DATABASE_ERRORS, Ledger
from distributor.ledger.subscribers import SubscriberStore
from distributor.render.templating import environment
from distributor.settings import Settings
from distributor.validate.addresses import address_problem, text_problem

LANGUAGES = ("zh", "en")
MAX_FORM_BYTES = 4 * 1024           # email, name, list, language and a token are a few hundred bytes
MAX_FIELDS = 16
MAX_QUERY_CHARS = 512
MAX_NAME_CHARS = 100
MAX_REFERER_CHARS = 2000
FORM_TOKEN_HOURS = 24.0             # a form left open overnight still works
HONEYPOT = "website"                # a field a person never sees, which form-filling bots fill in
TOKEN_FIELD = "form_token"
CONFIRM_FIELD, CONFIRM_VALUE = "confirm", "subscribe"
CONFIRM_PATH = re.compile(r"/confirm/([^/]{1,512})")
_REFERER = re.compile(r"[!-~]+")
# Each entry is a (heading, message) pair, or one piece of text (the form's labels and notes).
_WORDS: dict[str, dict[str, tuple[str, str] | str]] = {
    "zh": {
        "form": ("订阅 {site}", "输入你的邮箱地址，我们会发一封确认邮件给你。"),
        "email": "邮箱地址", "name": "称呼（可不填）", "list": "列表", "submit": "订阅",
        "honeypot": "请不要填写这一栏", "format": "格式", "format.email": "邮件", "format.text": "纯文本",
        "again": "请检查你填写的内容，然后再按一次“订阅”。",
        "bad_email": "请填写一个有效的邮箱地址（例如 name@example.org）。",
        "bad_name": "称呼不能超过 100 个字符，也不能包含换行或控制字符。",
        "bad_list": "请选择页面上的一个列表。",
        "bad_format": "请选择这个列表提供的一种格式。",
        "sent": ("请查收邮件", "如果这个地址可以订阅 {site}，一封确认邮件已经发出。请打开邮件中的链接完成订阅。"),
        "confirm": ("确认订阅", "按下面的按钮，确认订阅 {site} 的列表「{list}」。"), "button": "确认订阅",
        "confirmed": ("订阅成功", "你已订阅 {site} 的列表「{list}」。"),
        "already": ("已经确认", "这个订阅已经确认过了，无需再次确认。"),
        "used": ("链接已失效", "这个确认链接已经用过或不再有效。如需订阅，请重新填写订阅表单。"),
        "expired": ("链接已过期", "这个确认链接已经过期。请重新填写订阅表单，我们会再发一封确认邮件。"),
        "blocked": ("无法订阅", "这个地址目前不能接收邮件（投递被退回、被投诉或由发布者停止），订阅没有确认。"),
        "invalid": ("链接无效", "这个确认链接无效或不完整。请打开邮件中的完整链接。"),
        "unknown_list": ("列表不存在", "没有这个列表。"),
        "bad_request": ("请求无效", "请求无法处理，没有做任何更改。"),
        "too_large": ("请求过大", "请求内容过大，没有做任何更改。"),
        "not_found": ("页面不存在", "这里没有你要找的页面。"),
        "method": ("不支持的请求", "这个地址不支持此请求方法。"),
        "unavailable": ("暂时无法处理", "服务暂时无法处理请求，没有做任何更改。请稍后再试。"),
        "form_link": "订阅表单",
    },
    "en": {
        "form": ("Subscribe to {site}", "Enter your address and we will mail you a link to confirm."),
        "email": "Email address", "name": "Name (optional)", "list": "List", "submit": "Subscribe",
        "honeypot": "Leave this field empty", "format": "Format", "format.email": "Email",
        "format.text": "Plain text",
        "again": "Please check the form and press Subscribe again.",
        "bad_email": "Please give a valid email address (such as name@example.org).",
        "bad_name": "The name must be at most 100 characters on one line.",
        "bad_list": "Please choose one of the lists on the page.",
        "bad_format": "Please choose one of the formats this list is sent in.",
        "sent": ("Check your mail", "If this address can subscribe to {site}, a confirmation mail is on its way. "
                                    "Open the link in it to complete the subscription."),
        "confirm": ("Confirm subscription", "Press the button to subscribe to the list “{list}” of {site}."),
        "button": "Confirm subscription",
        "confirmed": ("Subscribed", "You are subscribed to the list “{list}” of {site}."),
        "already": ("Already confirmed", "This subscription is already confirmed; there is nothing more to do."),
        "used": ("Link used", "This confirmation link was used already or is no longer valid. To subscribe, "
                              "fill in the form again."),
        "expired": ("Link expired", "This confirmation link has expired. Fill in the form again and we will "
                                    "mail you a new one."),
        "blocked": ("Cannot subscribe", "This address cannot be mailed at present (a delivery bounced, a "
                                        "complaint, or the publisher stopped it); the subscription was not "
                                        "confirmed."),
        "invalid": ("Invalid link", "This confirmation link is invalid or incomplete. Open the full link from "
                                    "the mail."),
        "unknown_list": ("No such list", "There is no such list."),
        "bad_request": ("Bad request", "The request cannot be handled; nothing was changed."),
        "too_large": ("Request too large", "The request was too large; nothing was changed."),
        "not_found": ("Not found", "There is no page here."),
        "method": ("Method not allowed", "This address does not accept that request method."),
        "unavailable": ("Try again later", "The service cannot handle the request right now; nothing was "
                                           "changed. Please try again later."),
        "form_link": "the subscription form",
    },
}
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Page:
    """An answer: the status line, the HTML body, extra headers."""

    status: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SignupForm:
    """A signup POST's fields, checked: an address, a name or None, an offered list, a language, and
    the format chosen among those the list is sent in (None: none chosen)."""

    address: str
    name: str | None
    list: str
    language: str
    format: str | None


@dataclass(frozen=True)
class Confirmation:
    """A confirmation mail made before the transaction, for this id and To address."""

    subscriber_id: str
    to_address: str
    message: bytes


@dataclass(frozen=True)
class FormState:
    """What the form shows: the values to fill in (the list chosen, if any) and a note above it."""

    address: str = ""
    name: str = ""
    list: str | None = None
    note: str | None = None
    format: str | None = None


def is_signup_path(path: str) -> bool:
    return path == "/subscribe" or CONFIRM_PATH.fullmatch(path) is not None


def offered_lists(settings: Settings, served: dict[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """Return the lists the form offers: `signup.lists`, else every list a channel sends to (`served`,
    as `lists_by_channel` gives them)."""
    return settings.signup.lists or known_lists(_served(settings) if served is None else served)


def _served(settings: Settings) -> dict[str, tuple[str, ...]]:
    return lists_by_channel(registry.row_channels(registry.names()), settings)


def list_formats(lists: tuple[str, ...], served: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Return the formats each list may be read in (`formats_offered`; `email` for a list only the
    signup form names): the allow list of the form's `format` field."""
    return {name: formats_offered(name, served) or ("email",) for name in lists}


class SignupPages:
    """The signup handlers over `ledger`, whose calls `lock` serialises with the app's other pages.
    They answer 404 while no list is offered or no public URL is known (`distributor serve` refuses
    to start with lists but no URL)."""

    def __init__(self, ledger: Ledger, lock: threading.Lock, settings: Settings, secret: str):
        self.ledger = ledger
        self.settings = settings
        self.secret = secret
        self.wake = threading.Event()       # set when a mail was queued: the outbox sends it
        self._lock = lock
        served = _served(settings)
        self.lists = offered_lists(settings, served)
        self._offered_formats = list_formats(self.lists, served)
        self._formats = {name: formats[0] for name, formats in self._offered_formats.items()}
        self.public_url = signup.public_url(settings)
        language = settings.site.language.split("-")[0]
        self.language = language if language in LANGUAGES else "en"
        self._sent_pages: dict[str, Page] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.lists) and self.public_url is not None

    def respond(self, environ: dict) -> Page:
        """Answer a request for /subscribe or /confirm/<token>."""
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if not self.enabled:
            return self._message("404 Not Found", "not_found", self.language)
        if method not in ("GET", "HEAD", "POST"):
            return self._message("405 Method Not Allowed", "method", self.language,
                                 headers=(("Allow", "GET, HEAD, POST"),))
        try:
            if path == "/subscribe":
                return self._subscribe(environ) if method == "POST" else self._form_page(environ)
            token = CONFIRM_PATH.fullmatch(path)
            assert token is not None, path
            return self._confirm(environ, token[1], post=method == "POST")
        except DATABASE_ERRORS:
            _log.exception("the ledger cannot answer")
            return self._message("503 Service Unavailable", "unavailable", self.language,
                                 headers=(("Retry-After", "30"),))

    # --- the form --------------------------------------------------------------------------------

    def _form_page(self, environ: dict) -> Page:
        query = environ.get("QUERY_STRING", "")
        if len(query) > MAX_QUERY_CHARS:
            return self._message("400 Bad Request", "bad_request", self.language)
        try:
            fields = parse_qs(query, keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except ValueError:
            return self._message("400 Bad Request", "bad_request", self.language)
        language = _one(fields, "lang") or self.language
        if language not in LANGUAGES:
            return self._message("400 Bad Request", "bad_request", self.language)
        chosen = _one(fields, "list")
        if chosen is not None and chosen not in self.lists:
            return self._message("404 Not Found", "unknown_list", language)
        return self._form("200 OK", language, FormState(list=chosen))

    def _subscribe(self, environ: dict) -> Page:
        body = self._body(environ)
        if isinstance(body, Page):
            return body
        try:
            fields = parse_qs(body.decode("utf-8", "strict"), keep_blank_values=True, strict_parsing=False,
                              max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            return self._message("400 Bad Request", "bad_request", self.language)
        language = _one(fields, "lang") or self.language
        if language not in LANGUAGES:
            language = self.language
        if _one(fields, HONEYPOT):
            _log.info("signup: honeypot filled, nothing recorded")
            return self._sent(language)
        address, name = (_one(fields, "email") or "").strip(), (_one(fields, "name") or "").strip()
        chosen = _one(fields, "list") or (self.lists[0] if len(self.lists) == 1 else "")
        chosen_format = _one(fields, "format") or None
        known_list = chosen in self.lists
        state = FormState(address[:300], name[:300], chosen if known_list else None,
                          format=chosen_format if chosen_format in ("email", "text") else None)
        words = _labels(language)
        for refused, note in ((address_problem(address) is not None, "bad_email"),
                              (text_problem(name, max_length=MAX_NAME_CHARS) is not None, "bad_name"),
                              (not known_list, "bad_list"),
                              (chosen_format is not None and known_list
                               and chosen_format not in self._offered_formats[chosen], "bad_format")):
            if refused:
                return self._form("400 Bad Request", language, _noted(state, words[note]))
        token = tokens.read(_one(fields, TOKEN_FIELD) or "", "form", self.secret)
        now = self.ledger.clock()
        if token is None or token.expired(now) or token.age(now) < self.settings.signup.min_fill_seconds:
            return self._form("200 OK", language, _noted(state, words["again"]))
        form = SignupForm(address, name or None, chosen, language, chosen_format)
        client = client_address(environ, self.settings.signup.trusted_proxies)
        nonce = signup.new_nonce()
        with self._lock:
            store = SubscriberStore(self.ledger)
            known = store.subscriber(address)
            subscriber_id = store.known_id(address) or secrets.token_urlsafe(12)
        # The mail is made outside the lock (it is most of a POST's work) and for every POST, queued or
        # not, so that neither the page nor its timing says whether a mail went out. The id is only a
        # candidate until the transaction gives it to the address.
        to_address = known.address if known else address
        message = self._confirmation(form, subscriber_id, to_address, nonce, now)
        with self._lock, self.ledger.transaction():
            outcome = self._record(form, client, form_url(environ, self.public_url or ""), nonce,
                                   Confirmation(subscriber_id, to_address, message))
        _log.info("signup to list %s: %s", form.list, outcome)
        if outcome == "mail":
            self.wake.set()
        return self._sent(language)

    def _confirmation(self, form: SignupForm, subscriber_id: str, to_address: str, nonce: str, now: float) -> bytes:
        link = f"{self.public_url}confirm/" + signup.confirm_token(self.secret, subscriber_id, form.list, nonce,
                                                                   issued_at=now, settings=self.settings)
        return signup.confirmation_message(self.settings, to_address=to_address, list_name=form.list,
                                           language=form.language, link=link)

    def _record(self, form: SignupForm, client: str | None, url: str, nonce: str,
                made: Confirmation) -> signup.Outcome:
        """Record one signup (inside the caller's transaction): the client's count, the reader and their
        id, the consent request, the status and the confirmation mail in the outbox, as `signup.decide`
        says; nothing at all for a client past its budget. The mail `made` is made again in the rare case
        another POST gave the address its id first or changed how it is written."""
        store, now = SubscriberStore(self.ledger), self.ledger.clock()
        key = signup.client_key(self.secret, client) if client else "unknown"
        reader = store.subscriber(form.address)
        on = reader.on(form.list) if reader else None
        suppression = self.ledger.suppression(form.address)
        decision = signup.decide(signup.Standing(
            on.status if on else None, suppression.source if suppression else None,
            store.mails_since(now - signup.DAY_SECONDS, address=form.address),
            store.requests_since(now - signup.DAY_SECONDS, key)), self.settings)
        if not decision.recorded:
            return decision.outcome
        store.charge_request(key)
        subscriber_id = store.claim_id(form.address, made.subscriber_id)
        if reader is None:
            # A stranger may post anyone's address: an existing reader's name and language stay theirs.
            store.save(form.address, name=form.name, language=form.language)
        store.record_request(form.address, form.list, nonce=nonce, format=form.format, form_url=url,
                             client=signup.consent_client(self.secret, client, self.settings) if client else None)
        if decision.mark_unconfirmed:
            store.set_status(form.address, form.list, "unconfirmed", source="signup",
                             format=None if on else form.format or self._formats[form.list])
        if decision.mail:
            to_address = reader.address if reader else form.address
            message = made.message if (subscriber_id, to_address) == (made.subscriber_id, made.to_address) \
                else self._confirmation(form, subscriber_id, to_address, nonce, now)
            store.queue_mail(form.address, key, signup.envelope_sender(self.settings), message)
        return decision.outcome

    # --- the confirmation link -------------------------------------------------------------------

    def _confirm(self, environ: dict, token_text: str, *, post: bool) -> Page:
        language = self.language
        token = tokens.read(token_text, "confirm", self.secret)
        if token is None or len(token.values) != 3:
            return self._message("400 Bad Request", "invalid", language)
        subscriber_id, list_name, nonce = token.values
        if list_name not in self.lists:          # a list the form no longer offers
            return self._message("400 Bad Request", "invalid", language)
        with self._lock:
            reader = SubscriberStore(self.ledger).subscriber_by_id(subscriber_id)
        if reader is None:
            return self._message("400 Bad Request", "invalid", language)
        language = reader.language if reader.language in LANGUAGES else language
        if token.expired(self.ledger.clock()):
            return self._message("410 Gone", "expired", language, list_name=list_name, form_link=True)
        if not post:
            return self._message("200 OK", "confirm", language, list_name=list_name,
                                 template="web/signup_confirm.html")
        body = self._body(environ)
        if isinstance(body, Page):
            return body
        try:
            fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_FIELDS)
        except ValueError:          # more than MAX_FIELDS fields
            return self._message("400 Bad Request", "bad_request", language)
        if fields.get(CONFIRM_FIELD) != [CONFIRM_VALUE]:
            return self._message("400 Bad Request", "bad_request", language)
        client = client_address(environ, self.settings.signup.trusted_proxies)
        consent = signup.consent_client(self.secret, client, self.settings) if client else None
        with self._lock, self.ledger.transaction():
            what = self._confirm_request(reader.address, list_name, nonce, consent)
        _log.info("signup confirmation for list %s: %s", list_name, what)
        status = {"confirmed": "200 OK", "already": "200 OK", "used": "410 Gone", "blocked": "403 Forbidden"}[what]
        return self._message(status, what, language, list_name=list_name, form_link=what == "used")

    def _confirm_request(self, address: str, list_name: str, nonce: str, consent: str | None) -> str:
        """Confirm the one consent request the token's nonce names (inside the caller's transaction);
        return what happened: "confirmed", "already" (a replay), "used" (that request is confirmed
        already, or gone) or "blocked" (a suppression the reader did not make, which only the publisher
        lifts)."""
        store = SubscriberStore(self.ledger)
        reader = store.subscriber(address)
        if reader is None:
            return "used"
        on = reader.on(list_name)
        suppression = self.ledger.suppression(address)
        source = suppression.source if suppression else None
        if on is not None and on.status == "active" and source is None:
            return "already"
        if signup.blocked(source, on.status if on else None):
            return "blocked"
        confirmed = store.confirm_request(address, list_name, nonce, client=consent)
        if confirmed is None:
            return "used"
        chosen = confirmed.format if confirmed.format in self._offered_formats.get(list_name, ()) else None
        store.set_status(address, list_name, "active", source="confirm",
                         detail=f"client {consent}" if consent else None,
                         format=chosen or (None if on else self._formats.get(list_name, "email")))
        if source is not None:          # the reader's own (one-click, the page): they ask for mail again
            self.ledger.unsuppress(address)
        return "confirmed"

    def _body(self, environ: dict) -> bytes | Page:
        """Read the request body, or answer 400 for a Content-Length that is not a plain number and 413
        for one over MAX_FORM_BYTES (neither body is read)."""
        announced = environ.get("CONTENT_LENGTH") or "0"
        if not (announced.isascii() and announced.isdigit()):
            return self._message("400 Bad Request", "bad_request", self.language)
        # More digits than the limit has is too large, and is never turned into a (huge) number.
        if len(announced.lstrip("0")) > len(str(MAX_FORM_BYTES)) or int(announced) > MAX_FORM_BYTES:
            return self._message("413 Content Too Large", "too_large", self.language)
        return bytes(environ["wsgi.input"].read(int(announced)))

    # --- pages -----------------------------------------------------------------------------------

    def _sent(self, language: str) -> Page:
        """The one answer to every accepted POST, the same bytes whatever was decided (made once)."""
        if language not in self._sent_pages:
            self._sent_pages[language] = self._message("200 OK", "sent", language, template="web/subscribe_sent.html")
        return self._sent_pages[language]

    def _form(self, status: str, language: str, state: FormState) -> Page:
        heading, message = _pair(language, "form")
        site = self.settings.site.name
        form_token = tokens.sign("form", (), self.secret, issued_at=self.ledger.clock(),
                                 lifetime_seconds=FORM_TOKEN_HOURS * 3600)
        page = environment(self.settings.channels.email.template_dir).get_template("web/subscribe.html").render(
            language=language, site_name=site, heading=heading.format(site=site), message=message,
            note=state.note, fields=form_fields(state, self.lists, language, form_token, self._offered_formats))
        return Page(status, page.encode("utf-8"))

    def _message(self, status: str, what: str, language: str, *, list_name: str = "", form_link: bool = False,
                 template: str = "web/signup_message.html", headers: tuple[tuple[str, str], ...] = ()) -> Page:
        words = _labels(language)
        heading, message = _pair(language, what)
        site = self.settings.site.name
        link = None
        if form_link and self.public_url:
            link = f"{self.public_url}subscribe?list={quote(list_name)}&lang={language}"
        page = environment(self.settings.channels.email.template_dir).get_template(template).render(
            language=language, site_name=site, heading=heading.format(site=site),
            message=message.format(site=site, list=list_name), button=words["button"], field=CONFIRM_FIELD,
            value=CONFIRM_VALUE, form_link=link, form_link_text=words["form_link"])
        return Page(status, page.encode("utf-8"), headers)


@dataclass(frozen=True)
class FormFields:
    """The form's inputs as the template `web/subscribe_fields.html` lays them out."""

    words: Mapping[str, str]
    language: str
    address: str
    name: str
    lists: tuple[str, ...]
    chosen: str | None
    token: str | None
    formats: tuple[str, ...] = ()       # the `format` select's options; none: no select
    format: str | None = None
    honeypot: str = HONEYPOT
    token_field: str = TOKEN_FIELD


def form_fields(state: FormState, lists: tuple[str, ...], language: str, token: str | None,
                offered: Mapping[str, tuple[str, ...]]) -> FormFields:
    """Return the inputs of the form in `language`; `token` None leaves the form token out (the snippet).
    The format is offered when the chosen list (or, none chosen, one of the lists) is sent in several
    (`offered`, as `list_formats` gives them); the POST checks the choice against the list's."""
    shown = (state.list,) if state.list is not None else lists
    formats = tuple(dict.fromkeys(name for listed in shown for name in offered.get(listed, ())))
    return FormFields(_labels(language), language, state.address, state.name, lists, state.list, token,
                      formats if len(formats) > 1 else (), state.format)


def snippet(settings: Settings, list_name: str, language: str, action: str) -> str:
    """Return the embeddable form for `list_name`, posting to `action`: the page's fields without a
    form token, so its first POST gets the served form back to complete."""
    fields = form_fields(FormState(list=list_name), (list_name,), language, None,
                         list_formats((list_name,), _served(settings)))
    return environment(settings.channels.email.template_dir).get_template("web/subscribe_snippet.html").render(
        action=action, fields=fields, language=language)


def client_address(environ: Mapping[str, str], trusted_proxies: tuple[str, ...]) -> str | None:
    """Return the client's IP address: REMOTE_ADDR, or the last X-Forwarded-For hop when REMOTE_ADDR is a
    trusted proxy; None when it is not an IP address (a Unix socket)."""
    remote = _ip(environ.get("REMOTE_ADDR", ""))
    if remote is None:
        return None
    if trusted_proxies and any(remote == _ip(proxy) for proxy in trusted_proxies):
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        hop = _ip(forwarded[-100:].rsplit(",", 1)[-1]) if forwarded else None
        return hop or remote
    return remote


def form_url(environ: Mapping[str, str], public_url: str) -> str:
    """Return the form's URL for the consent record: the Referer when it is an http(s) URL under
    MAX_REFERER_CHARS characters, else the app's own form."""
    referer = environ.get("HTTP_REFERER", "")
    if len(referer) < MAX_REFERER_CHARS and _REFERER.fullmatch(referer):
        parts = urlsplit(referer)
        if parts.scheme in ("http", "https") and parts.netloc:
            return referer
    return f"{public_url}subscribe"


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def _pair(language: str, what: str) -> tuple[str, str]:
    """Return the heading and message of page `what` in `language`."""
    found = _WORDS[language][what]
    assert isinstance(found, tuple), what
    return found


def _labels(language: str) -> dict[str, str]:
    """Return the form's labels and notes in `language`."""
    return {key: value for key, value in _WORDS[language].items() if isinstance(value, str)}


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def _noted(state: FormState, note: str) -> FormState:
    return FormState(state.address, state.name, state.list, note, state.format)

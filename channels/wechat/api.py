"""A blocking client for the WeChat Official Account API, built on wechatpy.

Every wechatpy, requests and HTTP failure is translated here into the errors of
`distributor.errors`, so the core never imports wechatpy or requests. Those errors are raised
without the library's exception attached (neither as cause nor as context): its request URL
carries the access token.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import requests
from urllib3.exceptions import MaxRetryError
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

from distributor.errors import (
    ChannelStoppedError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UncertainDeliveryError,
)

# A token this close to its expiry is treated as expired, so it cannot lapse mid-call.
TOKEN_MARGIN_SECONDS = 300.0
TOKEN_REJECTED = {40001, 40014, 42001}
QUOTA_REACHED = {45009, 45028}
CLIENTMSGID_ALREADY_SENT = 45065
# Calls that change nothing on the server: a lost reply to one of them is merely transient.
READ_ONLY = {"stable_token", "draft/batchget", "freepublish/get", "freepublish/batchget", "message/mass/speed/get"}
CLIENTMSGID_TOO_FAST = 45066
API_UNAUTHORIZED = 48001
INVALID_MEDIA_ID = 40007
# A read-only call of each way a draft goes on, asked to learn whether the account may use it: since
# 2025 WeChat grants freepublish and mass send to verified accounts only, and answers 48001 otherwise.
PERMISSION_PROBES = {"publish": ("freepublish/batchget", {"offset": 0, "count": 1, "no_content": 1}),
                     "mass": ("message/mass/speed/get", {})}
MODE_VERBS = {"publish": "publish (freepublish)", "mass": "mass-send"}


def mode_that_works(mode: str, *, may_publish: bool) -> str:
    """The mode to name for an account that may not use `mode`: publish for one that may publish but not
    mass-send, else draft (whose article is published from the web console)."""
    return "publish" if mode == "mass" and may_publish else "draft"
# Refusals of the account's credentials or of this machine, whatever the call: every later call would
# be refused too, so the channel stops (exit 3) and a run after the fix resumes.
SESSION_REFUSED = {40013, 40125, 40164, 41002, 41004}
BEIJING = timezone(timedelta(hours=8))
HINTS = {
    40001: "check the configured app secret",
    40007: "invalid media_id: the cover or draft it names is unknown or was deleted",
    40013: "check the configured app_id (channels.wechat.app_id)",
    40125: "check the configured app secret (the variable named by channels.wechat.app_secret_env)",
    40164: ("add this server's IP to the account's IP whitelist (mp.weixin.qq.com: Settings and "
            "Development, Basic Configuration); a change takes a few minutes"),
    41002: "check the configured app_id (channels.wechat.app_id)",
    41004: "check the configured app secret (the variable named by channels.wechat.app_secret_env)",
    48001: ("the account lacks this API permission (since 2025 WeChat grants publishing and mass send to "
            "verified accounts only)"),
    53503: "the draft did not pass the publish check; fix it in the draft box",
    53504: "the draft must be published from the mp.weixin.qq.com web console",
    53505: "save the draft manually in the web console, then publish it",
}


@dataclass(frozen=True)
class WechatApiConfig:
    """Say which Official Account to talk to and where its API lives."""

    app_id: str
    app_secret: str = field(repr=False)
    base_url: str = "https://api.weixin.qq.com/"
    timeout_seconds: float = 15.0


class TokenStore(Protocol):
    """Keep access tokens across calls and processes, keyed by app id."""

    def load(self, app_id: str) -> tuple[str, float] | None: ...

    def save(self, app_id: str, token: str, expires_at: float) -> None: ...

    def drop(self, app_id: str) -> None: ...


class ApiUnauthorizedError(PermanentDeliveryError):
    """The account may not use this API (errcode 48001)."""


class MemoryTokenStore:
    """Keep access tokens in memory for the life of the process."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}

    def load(self, app_id: str) -> tuple[str, float] | None:
        """Return the saved (token, expires_at) for the app, or None."""
        return self._tokens.get(app_id)

    def save(self, app_id: str, token: str, expires_at: float) -> None:
        """Remember a token and the epoch second it expires."""
        self._tokens[app_id] = (token, expires_at)

    def drop(self, app_id: str) -> None:
        """Forget the app's token."""
        self._tokens.pop(app_id, None)


class _HttpClient(WeChatClient):
    """wechatpy's client pointed at a configurable host, fetching stable tokens with a timeout."""

    def __init__(self, config: WechatApiConfig):
        super().__init__(config.app_id, config.app_secret,
                         timeout=config.timeout_seconds, auto_retry=False)
        self.API_BASE_URL = config.base_url.rstrip("/") + "/cgi-bin/"

    def fetch_access_token(self) -> dict:
        """POST cgi-bin/stable_token and return its reply."""
        body = {"grant_type": "client_credential", "appid": self.appid,
                "secret": self.secret, "force_refresh": False}
        # A params value that is not a dict keeps wechatpy from asking for a token while fetching one.
        return self._request("post", "stable_token", params=(), data=body)


class WechatApi:
    """Call the Official Account endpoints the distributor needs, one blocking call each."""

    def __init__(self, config: WechatApiConfig, tokens: TokenStore, *,
                 clock: Callable[[], float] = time.time):
        self._config = config
        self._tokens = tokens
        self._clock = clock
        self._client = _HttpClient(config)

    def __repr__(self) -> str:
        return f"WechatApi(app_id={self._config.app_id!r}, base_url={self._config.base_url!r})"

    @property
    def app_id(self) -> str:
        """Return the app id of the account this client talks to."""
        return self._config.app_id

    def access_token(self) -> str:
        """Return the cached token unless it is about to expire; otherwise fetch a stable token."""
        cached = self._tokens.load(self._config.app_id)
        now = self._clock()
        if cached and cached[1] - TOKEN_MARGIN_SECONDS > now:
            return cached[0]
        reply = self._send("stable_token", self._client.fetch_access_token, token="")
        token = _field(reply, "access_token", "stable_token")
        self._tokens.save(self._config.app_id, token, now + float(reply.get("expires_in", 7200)))
        return token

    def upload_image(self, name: str, data: bytes, mime: str) -> str:
        """Upload an image for use inside article content and return its mmbiz URL."""
        reply = self._post("media/uploadimg", files={"media": (name, data, mime)})
        return _field(reply, "url", "media/uploadimg")

    def add_cover(self, name: str, data: bytes, mime: str) -> str:
        """Add an image as permanent material (an article cover) and return its media_id."""
        reply = self._post("material/add_material", params={"type": "image"},
                           files={"media": (name, data, mime)})
        return _field(reply, "media_id", "material/add_material")

    def add_draft(self, articles: list[dict]) -> str:
        """Add a draft of one or more articles (one news item) and return the draft's media_id."""
        reply = self._post("draft/add", data={"articles": articles})
        return _field(reply, "media_id", "draft/add")

    def update_draft(self, media_id: str, index: int, article: dict) -> None:
        """Replace the article at `index` of a draft in place, so the draft keeps its media_id."""
        self._post("draft/update", data={"media_id": media_id, "index": index, "articles": article})

    def delete_draft(self, media_id: str) -> None:
        """Delete a draft; one already gone (a repeat after a lost reply) counts as deleted."""
        self._post("draft/delete", data={"media_id": media_id}, success_codes=frozenset({INVALID_MEDIA_ID}))

    def list_drafts(self, offset: int, count: int) -> list[dict]:
        """Return one page of drafts, without their content."""
        reply = self._post("draft/batchget", data={"offset": offset, "count": count, "no_content": 1})
        return list(reply.get("item", []))

    def submit_publish(self, media_id: str) -> str:
        """Submit a draft for publishing and return the publish_id to poll."""
        reply = self._post("freepublish/submit", data={"media_id": media_id})
        return str(_field(reply, "publish_id", "freepublish/submit"))

    def publish_status(self, publish_id: str) -> dict:
        """Return the state of a publish job (publish_status 0 means published)."""
        return self._post("freepublish/get", data={"publish_id": publish_id})

    def list_published(self, offset: int, count: int) -> list[dict]:
        """Return one page of published articles, without their content."""
        reply = self._post("freepublish/batchget", data={"offset": offset, "count": count, "no_content": 1})
        return list(reply.get("item", []))

    def send_to_all(self, media_id: str, *, tag_id: int | None, clientmsgid: str) -> dict:
        """Mass-send an article to all followers or to one tag; a repeat of clientmsgid counts as sent."""
        target = {"is_to_all": True} if tag_id is None else {"is_to_all": False, "tag_id": tag_id}
        body = {"filter": target, "mpnews": {"media_id": media_id}, "msgtype": "mpnews",
                "send_ignore_reprint": 0, "clientmsgid": clientmsgid}
        return self._post("message/mass/sendall", data=body,
                          success_codes=frozenset({CLIENTMSGID_ALREADY_SENT}))

    def may_use(self, mode: str) -> bool:
        """Say whether the account may send a draft on in `mode` (publish, mass), by a read-only call
        of that API: False when WeChat answers 48001."""
        endpoint, body = PERMISSION_PROBES[mode]
        try:
            self._post(endpoint, data=body)
        except ApiUnauthorizedError:
            return False
        return True

    def send_preview(self, media_id: str, towxname: str) -> dict:
        """Send an article preview to one WeChat account name."""
        body = {"towxname": towxname, "mpnews": {"media_id": media_id}, "msgtype": "mpnews"}
        return self._post("message/mass/preview", data=body)

    def _post(self, endpoint: str, *, params: dict | None = None, data: dict | None = None,
              files: dict | None = None, success_codes: frozenset[int] = frozenset()) -> dict:
        token = self.access_token()
        query = {**(params or {}), "access_token": token}
        return self._send(endpoint, lambda: self._client.post(endpoint, params=query, data=data, files=files),
                          token=token, success_codes=success_codes)

    def _send(self, endpoint: str, call: Callable[[], Any], *, token: str,
              success_codes: frozenset[int] = frozenset()) -> dict:
        try:
            reply = call()
        except WeChatClientException as exc:
            if exc.errcode is not None and exc.errcode in success_codes:
                return _reply_dict(exc.response)
            error = self._classify(endpoint, exc)
        except requests.RequestException as exc:
            error = _network_error(endpoint, exc, reading=endpoint in READ_ONLY)
        else:
            if isinstance(reply, dict):
                return reply
            error = TransientDeliveryError(
                f"wechat {endpoint}: got an HTML gateway page instead of JSON (status "
                f"{getattr(reply, 'status_code', '?')})", reply=getattr(reply, "text", "")[:200])
        # Not chained, and raised outside the handler so no implicit context either: the library's
        # exception holds the request URL with access_token=..., which a traceback would print.
        # The message already says what failed: the errcode, the HTTP status or the exception's type.
        raise self._scrub(error, token) from None

    def _classify(self, endpoint: str, exc: WeChatClientException) -> DeliveryError:
        if exc.errcode is None:
            return _http_error(endpoint, exc.response)
        code, text = int(exc.errcode), f"wechat {endpoint}: errcode {exc.errcode} ({exc.errmsg})"
        reply = _reply_text(exc.response)
        if code == -1:
            return TransientDeliveryError(f"{text}: the WeChat system is busy", reply=reply)
        # On the token endpoint itself 40001 means a wrong secret, not a stale token.
        if code in TOKEN_REJECTED and endpoint != "stable_token":
            self._tokens.drop(self._config.app_id)
            return TransientDeliveryError(f"{text}: access token expired", reply=reply)
        if code in QUOTA_REACHED:
            return ChannelStoppedError(f"{text}: quota reached; {self._resume_hint()}", reply=reply)
        if code == CLIENTMSGID_TOO_FAST:
            return TransientDeliveryError(f"{text}: same clientmsgid retried too fast",
                                          reply=reply, retry_after_seconds=60)
        # On the token endpoint 40001 is a wrong secret too.
        if code in SESSION_REFUSED or (code == 40001 and endpoint == "stable_token"):
            return ChannelStoppedError(_with_hint(text, code), reply=reply)
        if code == API_UNAUTHORIZED:
            return ApiUnauthorizedError(_with_hint(text, code), reply=reply)
        return PermanentDeliveryError(_with_hint(text, code), reply=reply)

    def _resume_hint(self) -> str:
        now = datetime.fromtimestamp(self._clock(), BEIJING)
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return (f"daily quotas reset at midnight Beijing time: resume after "
                f"{midnight:%Y-%m-%d %H:%M} UTC+8 ({midnight.astimezone(timezone.utc):%Y-%m-%dT%H:%MZ})")

    def _scrub(self, error: DeliveryError, token: str) -> DeliveryError:
        """Blank out the secret and the token wherever a server echoed them back."""
        message, reply = str(error), error.reply
        for secret in (self._config.app_secret, token):
            if secret:
                message = message.replace(secret, "***")
                reply = reply.replace(secret, "***") if reply else reply
        error.args = (message,)
        error.reply = reply
        return error


def _network_error(endpoint: str, exc: requests.RequestException, *, reading: bool) -> DeliveryError:
    # urllib3 wraps only failures before the request went out (connect, TLS) in MaxRetryError;
    # a timeout or a dropped connection while waiting for the reply comes through unwrapped.
    cause = exc.args[0] if exc.args else None
    if isinstance(exc, requests.ConnectTimeout) or isinstance(cause, MaxRetryError):
        return TransientDeliveryError(f"wechat {endpoint}: could not connect ({type(exc).__name__})")
    lost = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)
    if isinstance(exc, lost) and reading:
        return TransientDeliveryError(
            f"wechat {endpoint}: no reply ({type(exc).__name__}); a read is safe to ask again")
    if isinstance(exc, lost):
        return UncertainDeliveryError(
            f"wechat {endpoint}: no reply after the request was sent ({type(exc).__name__}); "
            "the server may have acted, look before retrying")
    return PermanentDeliveryError(f"wechat {endpoint}: request failed ({type(exc).__name__})")


def _http_error(endpoint: str, response: requests.Response | None) -> DeliveryError:
    status = response.status_code if response is not None else 0
    text = f"wechat {endpoint}: HTTP {status or 'error'}"
    page = response.text[:200] if response is not None else None
    if status >= 500 or status == 429:
        return TransientDeliveryError(text, reply=page)
    return PermanentDeliveryError(f"{text}: check the configured base_url", reply=page)


def _with_hint(text: str, code: int) -> str:
    hint = HINTS.get(code)
    return f"{text}: {hint}" if hint else text


def _reply_text(response: requests.Response | None) -> str | None:
    return response.content.decode("utf-8", "replace")[:2000] if response is not None else None


def _reply_dict(response: requests.Response | None) -> dict:
    try:
        return json.loads(response.content.decode("utf-8")) if response is not None else {}
    except ValueError:
        return {}


def _field(reply: dict, key: str, endpoint: str) -> Any:
    if key not in reply:
        raise PermanentDeliveryError(f"wechat {endpoint}: the reply has no {key!r}",
                                     reply=json.dumps(reply, ensure_ascii=False)[:2000])
    return reply[key]

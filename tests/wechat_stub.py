"""A stand-in WeChat Official Account API server for tests.

`WechatStub` serves the cgi-bin endpoints the distributor uses on 127.0.0.1 (a free port)
from a background thread, keeps their state (images, cover materials, drafts, publish jobs,
published articles, mass sends, previews), records every request, and plays scripted faults.

    with WechatStub(publish_polls=2) as stub:
        config = WechatApiConfig(stub.app_id, stub.app_secret, base_url=stub.base_url, timeout_seconds=1)
        stub.inject("draft/add", Fault.http_status(502), Fault.lost_reply())
        ...
        assert len(stub.requests("stable_token")) == 1

Endpoints are named as the path under /cgi-bin/ ("draft/add", "message/mass/sendall").
draft/update replaces one article of a draft in place, with the checks draft/add makes; a
published draft has left the draft box, so updating it answers 40007.
A publish job answers publish_status 1 to its first `publish_polls - 1` freepublish/get calls
and its final status on the next; set `publish_final_status` (2, 3 or 4) to make jobs fail,
which keeps the draft. `mass_send_quota` makes sendall answer 45028 once that many were sent;
a clientmsgid seen within 24 stub hours answers 45065 with the first send's msg_id.
Tokens last `token_lifetime` seconds of the stub's own clock, which `advance_clock(seconds)`
moves; `expire_tokens()` makes every issued token answer 42001 at once and `revoke_tokens()`
makes them unknown (40014). `slow_down(endpoint, seconds)` makes every request to an endpoint
wait before it is acted on, which widens the window two concurrent clients race in; `hold(endpoint)`
makes requests to it wait (recorded, not yet acted on) until `release(endpoint)`, so a test can keep
a client inside one call for as long as it needs. Like the real
API, a JSON body holding `\\uXXXX` escapes is refused with 40033, so Chinese must go out as UTF-8.
"""
from __future__ import annotations

import copy
import itertools
import json
import re
import secrets
import string
import struct
import threading
import time
import traceback
import zlib
from collections import deque
from dataclasses import dataclass, replace
from email import message_from_bytes
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

STUB_HOST = "127.0.0.1"
# A slow-reply fault never sleeps longer than this, whatever a test asks for.
MAX_FAULT_DELAY_SECONDS = 5.0
# A held request waits at most this long for release(), so a test that forgets it cannot hang.
MAX_HOLD_SECONDS = 120.0
JSON_TYPE = "application/json; encoding=utf-8"
MAX_CONTENT_IMAGE_BYTES = 1024 * 1024
MAX_MATERIAL_BYTES = 10 * 1024 * 1024
MAX_CONTENT_CHARS = 20000
MAX_CONTENT_BYTES = 1024 * 1024
CLIENTMSGID_WINDOW_SECONDS = 24 * 3600
WECHAT_LINK_HOSTS = ("mp.weixin.qq.com",)
WECHAT_IMAGE_HOSTS = ("mmbiz.qpic.cn", "mmbiz.qlogo.cn")
IMAGE_SIGNATURES = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))
# An odd run of backslashes before u+4 hex digits is a JSON escape, not a literal backslash.
UNICODE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u[0-9a-fA-F]{4}")
LINK_TARGET = re.compile(r"<a\b[^>]*?\bhref\s*=\s*[\"']([^\"']*)", re.IGNORECASE)
IMAGE_SOURCE = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*[\"']([^\"']*)", re.IGNORECASE)
ID_ALPHABET = string.ascii_letters + string.digits
GATEWAY_PAGE = ("<html><head><title>Service Unavailable</title></head>"
                "<body><h1>Gateway is busy, please retry later</h1></body></html>")


@dataclass(frozen=True)
class UploadedFile:
    """One file part of a multipart upload, bytes exactly as received."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stub received it (at `at`, epoch seconds); `fault` names the scripted fault
    it met, if any."""

    method: str
    endpoint: str
    query: dict[str, str]
    body_text: str
    body_json: Any
    files: tuple[UploadedFile, ...]
    fault: str | None
    at: float = 0.0

    def file(self, field: str) -> UploadedFile | None:
        """Return the uploaded file of a form field, or None."""
        return next((f for f in self.files if f.field == field), None)


@dataclass(frozen=True)
class Fault:
    """A scripted misbehaviour for the next request to one endpoint; build it with the class methods."""

    kind: str
    code: int = 0
    message: str = ""
    seconds: float = 0.0

    @classmethod
    def errcode(cls, code: int, message: str = "scripted error") -> Fault:
        """Reply {"errcode": code, "errmsg": message} without acting."""
        return cls("errcode", code=code, message=message)

    @classmethod
    def http_status(cls, status: int = 502) -> Fault:
        """Reply with this HTTP status and an HTML page, without acting."""
        return cls("http_status", code=status)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Wait (at most MAX_FAULT_DELAY_SECONDS), then act and reply normally."""
        return cls("slow", seconds=min(seconds, MAX_FAULT_DELAY_SECONDS))

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without acting or replying."""
        return cls("drop")

    @classmethod
    def lost_reply(cls) -> Fault:
        """Act as usual, then close the connection instead of replying."""
        return cls("lost_reply")

    @classmethod
    def html_page(cls) -> Fault:
        """Reply 200 with an HTML gateway page instead of JSON, without acting."""
        return cls("html_page")


def sample_png(payload: bytes = b"") -> bytes:
    """Return a valid 1x1 PNG, with `payload` carried in a private chunk to vary its bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"prVt", payload)
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


@dataclass(frozen=True)
class StubReply:
    """What the stub sends back for one request."""

    status: int
    body: str
    content_type: str = JSON_TYPE


class _ApiError(Exception):
    """An errcode reply, raised from inside an endpoint handler."""

    def __init__(self, errcode: int, errmsg: str, **extra: Any):
        super().__init__(errmsg)
        self.payload = {"errcode": errcode, "errmsg": errmsg, **extra}


class WechatApiState:
    """The stub's endpoints and state without HTTP; the accessors return copies and are thread-safe."""

    ROUTES = {
        "stable_token": "_on_stable_token", "token": "_on_plain_token",
        "media/uploadimg": "_on_upload_image", "material/add_material": "_on_add_material",
        "draft/add": "_on_draft_add", "draft/update": "_on_draft_update", "draft/get": "_on_draft_get",
        "draft/batchget": "_on_draft_batchget", "draft/delete": "_on_draft_delete",
        "freepublish/submit": "_on_publish_submit", "freepublish/get": "_on_publish_get",
        "freepublish/batchget": "_on_published_batchget",
        "message/mass/sendall": "_on_sendall", "message/mass/preview": "_on_preview",
        "message/mass/speed/get": "_on_mass_speed",
    }
    # What an account without the publish and mass send permissions (`verified=False`) is refused:
    # since 2025 WeChat grants them to verified accounts only.
    VERIFIED_ONLY = ("freepublish/", "message/mass/sendall", "message/mass/speed/get")

    def __init__(self, app_id: str, app_secret: str, *, publish_polls: int, token_lifetime: int,
                 mass_send_quota: int | None):
        self.app_id = app_id
        self.app_secret = app_secret
        self.publish_polls = publish_polls
        self.publish_final_status = 0
        self.token_lifetime = token_lifetime
        self.mass_send_quota = mass_send_quota
        self.verified = True
        self.lock = threading.RLock()
        self._clock_offset = 0.0
        self._tokens: dict[str, float] = {}
        self._stable_token: str | None = None
        self._ids = itertools.count(100000001)
        self._images: dict[str, bytes] = {}
        self._materials: dict[str, bytes] = {}
        self._drafts: dict[str, dict] = {}
        self._jobs: dict[str, dict] = {}
        self._published: dict[str, dict] = {}
        self._mass_sends: list[dict] = []
        self._previews: list[dict] = []

    def now(self) -> float:
        """Return the stub clock (wall time plus every `advance_clock`)."""
        return time.time() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the stub clock forward; tokens and the clientmsgid window follow it."""
        with self.lock:
            self._clock_offset += seconds

    def expire_tokens(self) -> None:
        """Make every issued token answer 42001 from now on."""
        with self.lock:
            past = self.now() - 1
            self._tokens = {token: min(expiry, past) for token, expiry in self._tokens.items()}

    def revoke_tokens(self) -> None:
        """Forget every issued token, so they answer 40014."""
        with self.lock:
            self._tokens.clear()
            self._stable_token = None

    def images(self) -> dict[str, bytes]:
        """Return the images uploaded with media/uploadimg, by URL."""
        with self.lock:
            return dict(self._images)

    def materials(self) -> dict[str, bytes]:
        """Return the image materials (covers), by media_id."""
        with self.lock:
            return dict(self._materials)

    def drafts(self) -> dict[str, list[dict]]:
        """Return the drafts still in the draft box: media_id to its articles."""
        with self.lock:
            return {media_id: copy.deepcopy(d["news_item"]) for media_id, d in self._drafts.items()}

    def publish_jobs(self) -> dict[str, dict]:
        """Return the publish jobs by publish_id (media_id, gets, publish_status, article_id)."""
        with self.lock:
            return copy.deepcopy(self._jobs)

    def published(self) -> dict[str, dict]:
        """Return the published articles by article_id (media_id, news_item, update_time)."""
        with self.lock:
            return copy.deepcopy(self._published)

    def mass_sends(self) -> list[dict]:
        """Return the accepted mass sends (msg_id, msg_data_id, media_id, filter, clientmsgid,
        send_ignore_reprint, and `at`, the stub time it was accepted)."""
        with self.lock:
            return copy.deepcopy(self._mass_sends)

    def previews(self) -> list[dict]:
        """Return the accepted previews (msg_id, media_id, towxname or touser)."""
        with self.lock:
            return copy.deepcopy(self._previews)

    def answer(self, method: str, endpoint: str, query: dict[str, str], body_text: str,
               files: tuple[UploadedFile, ...]) -> StubReply:
        """Act on one request and return the reply the real API would give."""
        handler = self.ROUTES.get(endpoint)
        if handler is None:
            return StubReply(404, "<html><body>404 Not Found</body></html>", "text/html")
        with self.lock:
            try:
                if method != ("GET" if endpoint == "token" else "POST"):
                    raise _ApiError(43002 if method == "GET" else 43001, f"require {method} method")
                if endpoint not in ("stable_token", "token"):
                    self._check_token(query.get("access_token"))
                if not self.verified and endpoint.startswith(self.VERIFIED_ONLY):
                    raise _ApiError(48001, "api unauthorized rid: 6a1b2c3d-stub")
                body = {} if files or endpoint == "token" else _json_body(body_text)
                payload = getattr(self, handler)(body, query, files)
            except _ApiError as exc:
                payload = exc.payload
        content_type = "text/plain" if endpoint == "media/uploadimg" else JSON_TYPE
        return StubReply(200, json.dumps(payload, ensure_ascii=False), content_type)

    def _check_token(self, token: str | None) -> None:
        if not token or token not in self._tokens:
            raise _ApiError(40014, "invalid access_token")
        if self._tokens[token] <= self.now():
            raise _ApiError(42001, "access_token expired")

    def _check_credentials(self, grant_type: Any, appid: Any, secret: Any) -> None:
        if grant_type != "client_credential":
            raise _ApiError(40002, "invalid grant_type")
        if appid != self.app_id:
            raise _ApiError(40013, "invalid appid")
        if secret != self.app_secret:
            raise _ApiError(40125, "invalid appsecret")

    def _issue_token(self) -> str:
        token = new_id(64)
        self._tokens[token] = self.now() + self.token_lifetime
        return token

    def _on_stable_token(self, body: dict, query: dict, files: tuple) -> dict:
        self._check_credentials(body.get("grant_type"), body.get("appid"), body.get("secret"))
        current = self._stable_token
        if body.get("force_refresh") or current is None or self._tokens.get(current, 0) <= self.now():
            self._tokens.pop(current or "", None)
            current = self._stable_token = self._issue_token()
        return {"access_token": current, "expires_in": int(self._tokens[current] - self.now())}

    def _on_plain_token(self, body: dict, query: dict, files: tuple) -> dict:
        self._check_credentials(query.get("grant_type"), query.get("appid"), query.get("secret"))
        return {"access_token": self._issue_token(), "expires_in": self.token_lifetime}

    def _on_upload_image(self, body: dict, query: dict, files: tuple) -> dict:
        data = _media(files)
        kind = _image_kind(data)
        if kind not in ("jpg", "png"):
            raise _ApiError(40005, "invalid file type")
        if len(data) >= MAX_CONTENT_IMAGE_BYTES:
            raise _ApiError(40009, "invalid image size")
        # Shaped and sized like the real replies (an 86-character id), less their "&from=appmsg".
        url = f"http://mmbiz.qpic.cn/sz_mmbiz_{kind}/{new_id(86)}/0?wx_fmt={kind}"
        self._images[url] = data
        return {"url": url}

    def _on_add_material(self, body: dict, query: dict, files: tuple) -> dict:
        if query.get("type") != "image":
            raise _ApiError(40004, "invalid media type")
        data = _media(files)
        kind = _image_kind(data)
        if kind is None:
            raise _ApiError(40005, "invalid file type")
        if len(data) > MAX_MATERIAL_BYTES:
            raise _ApiError(40009, "invalid image size")
        media_id = new_id(43)
        self._materials[media_id] = data
        return {"media_id": media_id, "url": f"http://mmbiz.qpic.cn/mmbiz_{kind}/{new_id(40)}/0", "item": []}

    def _on_draft_add(self, body: dict, query: dict, files: tuple) -> dict:
        articles = body.get("articles")
        if not isinstance(articles, list) or not articles:
            raise _ApiError(44003, "empty news data")
        if len(articles) > 8:
            raise _ApiError(45008, "article size out of limit")
        for article in articles:
            self._check_article(article)
        media_id = new_id(43)
        stamp = int(self.now())
        self._drafts[media_id] = {"news_item": copy.deepcopy(articles),
                                  "create_time": stamp, "update_time": stamp}
        return {"media_id": media_id}

    def _on_draft_update(self, body: dict, query: dict, files: tuple) -> dict:
        draft = self._drafts.get(str(body.get("media_id")))
        if draft is None:
            raise _ApiError(40007, "invalid media_id")
        index = body.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(draft["news_item"]):
            raise _ApiError(40035, "invalid args: index out of range")
        article = body.get("articles")
        self._check_article(article)
        draft["news_item"][index] = copy.deepcopy(article)
        draft["update_time"] = int(self.now())
        return {"errcode": 0, "errmsg": "ok"}

    def _on_draft_delete(self, body: dict, query: dict, files: tuple) -> dict:
        if self._drafts.pop(str(body.get("media_id")), None) is None:
            raise _ApiError(40007, "invalid media_id")
        return {"errcode": 0, "errmsg": "ok"}

    def _check_article(self, article: Any) -> None:
        if not isinstance(article, dict) or not article.get("title") or not article.get("content"):
            raise _ApiError(44003, "empty news data")
        content = str(article["content"])
        for key, limit, code in (("title", 32, 45003), ("author", 16, 45110), ("digest", 128, 45004)):
            if len(str(article.get(key) or "")) > limit:
                raise _ApiError(code, f"{'description' if key == 'digest' else key} size out of limit")
        if len(content) >= MAX_CONTENT_CHARS or len(content.encode("utf-8")) >= MAX_CONTENT_BYTES:
            raise _ApiError(45002, "content size out of limit")
        if article.get("thumb_media_id") not in self._materials:
            raise _ApiError(40007, "invalid media_id")
        for href in LINK_TARGET.findall(content):
            if urlsplit(href).hostname not in (None, *WECHAT_LINK_HOSTS):
                raise _ApiError(45166, f"invalid content hint: outside link {href}")
        for src in IMAGE_SOURCE.findall(content):
            if urlsplit(src).hostname not in WECHAT_IMAGE_HOSTS:
                raise _ApiError(45166, f"invalid content hint: image not uploaded {src}")

    def _on_draft_get(self, body: dict, query: dict, files: tuple) -> dict:
        draft = self._drafts.get(str(body.get("media_id")))
        if draft is None:
            raise _ApiError(40007, "invalid media_id")
        return {"news_item": copy.deepcopy(draft["news_item"])}

    def _on_draft_batchget(self, body: dict, query: dict, files: tuple) -> dict:
        items = [{"media_id": media_id, "content": {"news_item": _articles(d["news_item"], body)},
                  "update_time": d["update_time"]} for media_id, d in reversed(self._drafts.items())]
        return _page(items, body)

    def _on_publish_submit(self, body: dict, query: dict, files: tuple) -> dict:
        media_id = str(body.get("media_id"))
        if media_id not in self._drafts:
            raise _ApiError(40007, "invalid media_id")
        publish_id = str(next(self._ids))
        self._jobs[publish_id] = {"media_id": media_id, "gets": 0, "publish_status": 1, "article_id": None}
        return {"errcode": 0, "errmsg": "ok", "publish_id": publish_id, "msg_data_id": next(self._ids)}

    def _on_publish_get(self, body: dict, query: dict, files: tuple) -> dict:
        publish_id = str(body.get("publish_id"))
        job = self._jobs.get(publish_id)
        if job is None:
            raise _ApiError(53600, "invalid publish_id")
        job["gets"] += 1
        if job["publish_status"] == 1 and job["gets"] >= self.publish_polls:
            self._finish(job)
        reply = {"publish_id": publish_id, "publish_status": job["publish_status"],
                 "fail_idx": [1] if job["publish_status"] in (2, 3, 4) else []}
        if job["article_id"]:
            news = self._published[job["article_id"]]["news_item"]
            reply["article_id"] = job["article_id"]
            reply["article_detail"] = {"count": len(news), "item": [
                {"idx": idx, "article_url": a["url"]} for idx, a in enumerate(news, start=1)]}
        return reply

    def _finish(self, job: dict) -> None:
        job["publish_status"] = self.publish_final_status
        if self.publish_final_status != 0:
            return
        news = self._drafts.pop(job["media_id"])["news_item"]
        for article in news:
            article["url"] = f"https://mp.weixin.qq.com/s/{new_id(22)}"
        job["article_id"] = new_id(43)
        self._published[job["article_id"]] = {"media_id": job["media_id"], "news_item": news,
                                              "update_time": int(self.now())}

    def _on_published_batchget(self, body: dict, query: dict, files: tuple) -> dict:
        items = [{"article_id": article_id, "content": {
                      "news_item": _articles(p["news_item"], body),
                      "create_time": p["update_time"], "update_time": p["update_time"]},
                  "update_time": p["update_time"]} for article_id, p in reversed(self._published.items())]
        return _page(items, body)

    def _known_media(self, body: dict) -> str:
        if body.get("msgtype") != "mpnews":
            raise _ApiError(40008, "invalid message type")
        media_id = str((body.get("mpnews") or {}).get("media_id"))
        if media_id not in self._drafts and all(p["media_id"] != media_id for p in self._published.values()):
            raise _ApiError(40007, "invalid media_id")
        return media_id

    def _on_sendall(self, body: dict, query: dict, files: tuple) -> dict:
        media_id = self._known_media(body)
        target = body.get("filter") or {}
        if "group_id" in target or (not target.get("is_to_all") and "tag_id" not in target):
            raise _ApiError(40035, "invalid args: filter needs is_to_all or tag_id")
        clientmsgid = body.get("clientmsgid")
        for sent in self._mass_sends:
            if clientmsgid and sent["clientmsgid"] == clientmsgid \
                    and self.now() - sent["at"] < CLIENTMSGID_WINDOW_SECONDS:
                raise _ApiError(45065, "clientmsgid exist", msg_id=sent["msg_id"])
        if self.mass_send_quota is not None and len(self._mass_sends) >= self.mass_send_quota:
            raise _ApiError(45028, "has no masssend quota")
        send = {"msg_id": next(self._ids), "msg_data_id": next(self._ids), "media_id": media_id,
                "filter": target, "clientmsgid": clientmsgid,
                "send_ignore_reprint": body.get("send_ignore_reprint"), "at": self.now()}
        self._mass_sends.append(send)
        return {"errcode": 0, "errmsg": "send job submission success",
                "msg_id": send["msg_id"], "msg_data_id": send["msg_data_id"]}

    def _on_mass_speed(self, body: dict, query: dict, files: tuple) -> dict:
        return {"speed": 3, "realspeed": 15}

    def _on_preview(self, body: dict, query: dict, files: tuple) -> dict:
        media_id = self._known_media(body)
        receiver = {key: body[key] for key in ("towxname", "touser") if body.get(key)}
        if not receiver:
            raise _ApiError(40003, "invalid openid")
        preview = {"msg_id": next(self._ids), "media_id": media_id, **receiver}
        self._previews.append(preview)
        return {"errcode": 0, "errmsg": "preview success", "msg_id": preview["msg_id"]}


def _json_body(text: str) -> dict:
    if not text:
        raise _ApiError(44002, "empty post data")
    if UNICODE_ESCAPE.search(text):
        raise _ApiError(40033, "invalid charset. please check your request, "
                               "if include \\uxxxx will create fail!")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _ApiError(47001, "data format error")
    return body


def _media(files: tuple[UploadedFile, ...]) -> bytes:
    media = next((f for f in files if f.field == "media"), None)
    if media is None or not media.data:
        raise _ApiError(41005, "media data missing")
    return media.data


def _image_kind(data: bytes) -> str | None:
    for signature, kind in IMAGE_SIGNATURES:
        if data.startswith(signature):
            return kind
    return None


def _articles(news: list[dict], body: dict) -> list[dict]:
    articles = copy.deepcopy(news)
    if body.get("no_content"):
        for article in articles:
            article.pop("content", None)
    return articles


def _page(items: list[dict], body: dict) -> dict:
    offset, count = int(body.get("offset", 0)), int(body.get("count", 0))
    if offset < 0 or not 1 <= count <= 20:
        raise _ApiError(40035, "invalid args: count must be 1 to 20")
    page = items[offset:offset + count]
    return {"total_count": len(items), "item_count": len(page), "item": page}


def new_id(length: int) -> str:
    """Return a random identifier shaped like WeChat's ids (letters, digits)."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


class WechatStub(WechatApiState):
    """Serve the WeChat API on 127.0.0.1 from a thread; start()/stop() or use it as a context manager."""

    def __init__(self, app_id: str = "wx0123456789abcdef", app_secret: str = "stub-app-secret-5e3f", *,
                 publish_polls: int = 1, token_lifetime: int = 7200, mass_send_quota: int | None = None):
        super().__init__(app_id, app_secret, publish_polls=publish_polls,
                         token_lifetime=token_lifetime, mass_send_quota=mass_send_quota)
        self._faults: dict[str, deque[Fault]] = {}
        self._delays: dict[str, float] = {}
        self._holds: dict[str, threading.Event] = {}
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> WechatStub:
        """Bind 127.0.0.1 on a free port and serve from a daemon thread."""
        self._stopping.clear()
        server = ThreadingHTTPServer((STUB_HOST, 0), _Handler)
        server.daemon_threads = True
        server.stub = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="wechat-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake any slow-reply fault and held request, and close the socket."""
        self._stopping.set()
        with self.lock:
            for gate in self._holds.values():
                gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> WechatStub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """Return the (host, port) the stub listens on."""
        if self._server is None:
            raise RuntimeError("the stub is not running")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def base_url(self) -> str:
        """Return the URL to configure as the API base ("http://127.0.0.1:PORT/")."""
        host, port = self.address
        return f"http://{host}:{port}/"

    def inject(self, endpoint: str, *faults: Fault) -> None:
        """Queue faults for an endpoint; each request to it consumes the next one, in order."""
        with self.lock:
            self._faults.setdefault(_endpoint(endpoint), deque()).extend(faults)

    def slow_down(self, endpoint: str, seconds: float) -> None:
        """Make every later request to an endpoint wait `seconds` (at most MAX_FAULT_DELAY_SECONDS)
        before it is acted on and answered."""
        with self.lock:
            self._delays[_endpoint(endpoint)] = min(seconds, MAX_FAULT_DELAY_SECONDS)

    def hold(self, endpoint: str) -> None:
        """Make later requests to an endpoint wait, once recorded, until `release(endpoint)` (or stop(),
        or MAX_HOLD_SECONDS)."""
        with self.lock:
            self._holds[_endpoint(endpoint)] = threading.Event()

    def release(self, endpoint: str) -> None:
        """Let the held requests to an endpoint, and every later one, go on."""
        with self.lock:
            gate = self._holds.pop(_endpoint(endpoint), None)
        if gate is not None:
            gate.set()

    def pending_faults(self, endpoint: str) -> int:
        """Return how many scripted faults an endpoint has not consumed yet."""
        with self.lock:
            return len(self._faults.get(_endpoint(endpoint), ()))

    def requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """Return the recorded requests, oldest first, optionally to one endpoint only."""
        with self.lock:
            return [r for r in self._requests if endpoint is None or r.endpoint == _endpoint(endpoint)]

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self.lock:
            queue = self._faults.get(endpoint)
            return queue.popleft() if queue else None

    def _record(self, request: RecordedRequest) -> None:
        with self.lock:
            self._requests.append(request)


class _Handler(BaseHTTPRequestHandler):
    """Read one request, play its fault if any, and answer from the stub's state."""

    server_version = "WechatStub/1.0"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def _serve(self, method: str) -> None:
        stub: WechatStub = self.server.stub  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = _parse(method, _endpoint(url.path), url.query, self.headers.get("Content-Type", ""), raw)
        fault = stub._take_fault(request.endpoint)
        stub._record(request if fault is None else _with_fault(request, fault.kind))
        with stub.lock:
            delay = stub._delays.get(request.endpoint, 0.0)
            gate = stub._holds.get(request.endpoint)
        if gate is not None:
            gate.wait(MAX_HOLD_SECONDS)
        if delay:
            stub._stopping.wait(delay)
        if fault is not None and fault.kind == "slow":
            stub._stopping.wait(fault.seconds)
        if fault is not None and fault.kind == "drop":
            self.close_connection = True
            return
        if fault is not None and fault.kind in ("errcode", "http_status", "html_page"):
            self._write(_fault_reply(fault))
            return
        try:
            reply = stub.answer(method, request.endpoint, request.query, request.body_text, request.files)
        except Exception:  # a bug in the stub: answer 500 with the traceback so the test shows it
            reply = StubReply(500, traceback.format_exc(), "text/plain")
        if fault is not None and fault.kind == "lost_reply":
            self.close_connection = True
            return
        self._write(reply)

    def _write(self, reply: StubReply) -> None:
        body = reply.body.encode("utf-8")
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting (a slow-reply fault)


def _fault_reply(fault: Fault) -> StubReply:
    if fault.kind == "errcode":
        body = json.dumps({"errcode": fault.code, "errmsg": fault.message}, ensure_ascii=False)
        return StubReply(200, body, "application/json; encoding=utf-8")
    if fault.kind == "http_status":
        page = f"<html><head><title>{fault.code}</title></head><body>error {fault.code}</body></html>"
        return StubReply(fault.code, page, "text/html")
    return StubReply(200, GATEWAY_PAGE, "text/html; charset=utf-8")


def _endpoint(path: str) -> str:
    return path.lstrip("/").removeprefix("cgi-bin/")


def _parse(method: str, endpoint: str, query: str, content_type: str, raw: bytes) -> RecordedRequest:
    params = {key: values[-1] for key, values in parse_qs(query).items()}
    files: tuple[UploadedFile, ...] = ()
    text = ""
    if content_type.startswith("multipart/form-data"):
        files = _parse_multipart(content_type, raw)
    else:
        text = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    return RecordedRequest(method, endpoint, params, text, parsed, files, None, time.time())


def _with_fault(request: RecordedRequest, kind: str) -> RecordedRequest:
    return replace(request, fault=kind)


def _parse_multipart(content_type: str, raw: bytes) -> tuple[UploadedFile, ...]:
    # Split by hand: the email parser does not promise to keep binary parts byte for byte.
    found = re.search(r'boundary="?([^";]+)"?', content_type)
    if not found:
        return ()
    files = []
    for part in raw.split(b"--" + found.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = message_from_bytes(head + b"\r\n\r\n", policy=HTTP)
        files.append(UploadedFile(
            field=str(headers.get_param("name", "", header="content-disposition")),
            filename=headers.get_filename() or "",
            content_type=headers.get_content_type(),
            data=data.removesuffix(b"\r\n")))
    return tuple(files)


"""Publish an issue to a WeChat Official Account: draft, then publish or mass send, resumably.

Each step's result goes into the ledger the moment WeChat returns it, so a re-run starts after
the last recorded step: never a second draft, never a second publish or mass send. The draft is
recorded with the content hash of the issue file it was made from ("draft_hash"); after the file
is edited, a run brings the draft up to date in place (draft/update) unless a publish has begun or
a mass send is recorded, in which case the draft is left alone and the outcome says the edit was
not sent. draft/add and freepublish/submit take no idempotency key, so a "<step>_started"
checkpoint is written before each; when the reply is lost, or a run died during the call, the
account is searched for what the call may have made (same title and original URL, updated after
the attempt began) before it is made again. A submit whose outcome is unknown is not made again
before RESUBMIT_AFTER_SECONDS have passed since it began: publishing is asynchronous, so an empty
freepublish/batchget right after it proves nothing, but WeChat lists an article within seconds of
it being published and never lists a failed one, so still finding nothing after that long means
the submit did not publish. Every call goes through the core retry policy, in a worker thread;
waiting for a publish job to finish is a second policy of the same kind, built for polling.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable

from distributor.errors import (
    InputError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from distributor.ledger import Ledger
from distributor.models import Issue, WechatRendition
from distributor.retry import RetryPolicy
from distributor.settings import Settings, secret_from_env

from .wechat import limit_violations
from .wechat_api import WechatApi, WechatApiConfig
from .wechat_images import LoadedImage, load_content_image, load_cover, needs_upload, replace_image_sources

CHANNEL = "wechat"
TOKEN_KIND, IMAGE_KIND, COVER_KIND = "wechat-token", "wechat-image", "wechat-cover"
POLL_CAP_SECONDS = 60.0
# Polling ends at publish_wait_seconds; this only bounds the attempts (and keeps 2**n a float).
POLL_ATTEMPTS = 1000
RESUBMIT_AFTER_SECONDS = 600.0
# Server and local clocks may disagree; a found item this much older than the attempt still counts.
CLOCK_SKEW_SECONDS = 600.0
# Lists are newest first; what an attempt of this run made is on the first page.
LOOK_COUNT = 20
PUBLISH_FAILURES = {
    2: "the originality check failed", 3: "publishing failed", 4: "the platform's review rejected it",
    5: "the account deleted it after publishing", 6: "the platform banned it after publishing",
}
NO_COVER = "WeChat needs a cover: set cover in the front matter or channels.wechat.default_cover"
EDIT_NOT_SENT = "the article was already published or mass-sent, so this edit of the issue file was not sent"
# Once one of these is recorded the draft may be out (or being published): it is never changed again.
SENT_STEPS = ("publish_started", "publish_id", "published", "mass_msg_id")


@dataclass(frozen=True)
class WechatOutcome:
    mode: str                 # "draft" | "publish" | "mass" | "preview"
    media_id: str | None
    detail: str               # one line for the terminal
    resumed: bool             # True when a recorded step was reused


@dataclass(frozen=True)
class _Draft:
    """The issue's draft as this run leaves it; `edit_not_sent` when the issue file changed after
    the article went out."""

    media_id: str
    resumed: bool
    detail: str
    edit_not_sent: bool = False


class _StillPublishing(TransientDeliveryError):
    """The publish job is still running: ask again later."""


class LedgerTokenStore:
    """Keep access tokens in the ledger's cache (kind "wechat-token"), so separate runs share one."""

    def __init__(self, ledger: Ledger):
        self._ledger = ledger

    def load(self, app_id: str) -> tuple[str, float] | None:
        """Return the saved (token, expires_at) unless it has expired."""
        saved = self._ledger.cached(TOKEN_KIND, app_id)
        if saved is None:
            return None
        value = json.loads(saved)
        return value["token"], float(value["expires_at"])

    def save(self, app_id: str, token: str, expires_at: float) -> None:
        """Remember the token until `expires_at` (epoch seconds)."""
        value = json.dumps({"token": token, "expires_at": expires_at})
        self._ledger.cache(TOKEN_KIND, app_id, value, expires_at)

    def drop(self, app_id: str) -> None:
        """Forget the app's token."""
        self._ledger.uncache(TOKEN_KIND, app_id)


async def publish_wechat(rendition: WechatRendition, issue: Issue, settings: Settings, ledger: Ledger,
                         policy: RetryPolicy, *, to_wechat: str | None = None,
                         api: WechatApi | None = None) -> WechatOutcome:
    """Publish the article in the configured mode, or send a preview of its draft to the WeChat
    account `to_wechat`. Check the limits and load every image and the cover before any call
    (InputError naming the field, image or limit), then run the steps the ledger does not
    record as done; `api` replaces the client otherwise built from the settings."""
    problems = limit_violations(rendition)
    if problems:
        raise InputError("; ".join(problems))
    run = _WechatRun(rendition, issue, settings, ledger, policy, api or wechat_api(settings, ledger))
    draft = await run.draft()
    mode = "preview" if to_wechat else settings.channels.wechat.mode
    if mode == "draft":
        return WechatOutcome(mode, draft.media_id, draft.detail, draft.resumed)
    if mode == "preview":
        await run.call(run.api.send_preview, draft.media_id, to_wechat)
        return WechatOutcome(mode, draft.media_id, f"preview sent to {to_wechat}; {draft.detail}", draft.resumed)
    step = run.publish if mode == "publish" else run.mass_send
    line, step_resumed = await step(draft.media_id)
    if draft.edit_not_sent:
        line = f"{line}; {EDIT_NOT_SENT}"
    return WechatOutcome(mode, draft.media_id, line, draft.resumed or step_resumed)


def wechat_api(settings: Settings, ledger: Ledger) -> WechatApi:
    """Return the API client the settings describe, its token cached in the ledger."""
    wechat = settings.channels.wechat
    if not wechat.app_id:
        raise InputError("channels.wechat.app_id is not set")
    secret = secret_from_env(wechat.app_secret_env, "the WeChat AppSecret")
    config = WechatApiConfig(wechat.app_id, secret, base_url=wechat.base_url,
                             timeout_seconds=wechat.timeout_seconds)
    return WechatApi(config, LedgerTokenStore(ledger))


class _WechatRun:
    """The steps of one publish, each recorded in the ledger under the issue key."""

    def __init__(self, rendition: WechatRendition, issue: Issue, settings: Settings, ledger: Ledger,
                 policy: RetryPolicy, api: WechatApi):
        self.rendition, self.settings, self.ledger, self.policy, self.api = rendition, settings, ledger, policy, api
        self.key, self.content_hash = issue.key, issue.content_hash

    async def call(self, function: Callable[..., Any], *args: Any, repeatable: bool = False,
                   **kwargs: Any) -> Any:
        """Run a blocking call in a thread under the retry policy; a `repeatable` call (one whose
        repeat does no harm) is also retried when its reply was lost."""
        async def attempt() -> Any:
            try:
                return await asyncio.to_thread(function, *args, **kwargs)
            except UncertainDeliveryError as exc:
                if not repeatable:
                    raise
                raise TransientDeliveryError(f"{exc}; repeating it is harmless", reply=exc.reply) from exc
        return await self.policy.run(attempt)

    def recorded(self, step: str) -> str | None:
        return self.ledger.checkpoint(self.key, CHANNEL, step)

    def record(self, step: str, value: str) -> None:
        self.ledger.save_checkpoint(self.key, CHANNEL, step, value)

    # --- draft ------------------------------------------------------------------------------

    async def draft(self) -> _Draft:
        """Return the issue's draft, made if none is recorded and brought up to date in place
        if the issue file changed since and the article has not gone out."""
        media_id = self.recorded("draft")
        if media_id is None:
            return await self._make_draft()
        if self.recorded("draft_hash") == self.content_hash:
            return _Draft(media_id, True, f"draft already created: media_id {media_id}")
        if any(self.recorded(step) is not None for step in SENT_STEPS):
            return _Draft(media_id, True, f"{EDIT_NOT_SENT}: media_id {media_id}", edit_not_sent=True)
        return await self._update_draft(media_id, "draft updated with the edited issue")

    async def _make_draft(self) -> _Draft:
        media = await self._media()
        started = self.recorded("draft_started")
        found = None if started is None else await self._find_draft(float(started))
        if found is not None:
            self.record("draft", found)
            # draft_hash names the file the interrupted run made its draft from.
            if self.recorded("draft_hash") == self.content_hash:
                return _Draft(found, True, f"draft found from an interrupted run: media_id {found}")
            return await self._update_draft(found, "draft found from an interrupted run and updated", media)
        article = await self._article(*media)
        self.record("draft_hash", self.content_hash)
        started = self._start("draft")
        try:
            media_id, how = await self.call(self.api.add_draft, article), "draft created"
        except UncertainDeliveryError:
            found = await self._find_draft(started)
            media_id, how = ((found, "draft found after a lost reply") if found is not None
                             else (await self.call(self.api.add_draft, article), "draft created"))
        self.record("draft", media_id)
        return _Draft(media_id, False, f"{how}: media_id {media_id}")

    async def _update_draft(self, media_id: str, how: str,
                            media: tuple[list[LoadedImage], LoadedImage] | None = None) -> _Draft:
        article = await self._article(*(media or await self._media()))
        # Putting the same article twice changes nothing, so a lost reply may be retried.
        await self.call(self.api.update_draft, media_id, article, repeatable=True)
        self.record("draft_hash", self.content_hash)
        return _Draft(media_id, True, f"{how}: media_id {media_id}")

    async def _media(self) -> tuple[list[LoadedImage], LoadedImage]:
        """Load and check every image and the cover, before anything is uploaded."""
        if not self.rendition.cover:
            raise InputError(NO_COVER)
        return await self.policy.run(lambda: asyncio.to_thread(self._load_media))

    def _load_media(self) -> tuple[list[LoadedImage], LoadedImage]:
        images = [load_content_image(url, self.settings) for url in self.rendition.images if needs_upload(url)]
        return images, load_cover(self.rendition.cover or "", self.settings)

    async def _article(self, images: list[LoadedImage], cover: LoadedImage) -> dict:
        uploaded = {image.url: await self._upload_image(image) for image in images}
        content = replace_image_sources(self.rendition.content, uploaded)
        problems = limit_violations(replace(self.rendition, content=content))
        if problems:
            raise InputError("; ".join(problems))
        wechat = self.settings.channels.wechat
        return {"title": self.rendition.title, "author": self.rendition.author, "digest": self.rendition.digest,
                "content": content, "content_source_url": self.rendition.content_source_url,
                "thumb_media_id": await self._upload_cover(cover),
                "need_open_comment": int(wechat.need_open_comment),
                "only_fans_can_comment": int(wechat.only_fans_can_comment)}

    async def _upload_image(self, image: LoadedImage) -> str:
        url = self.ledger.cached(IMAGE_KIND, image.sha256)
        if url is None:
            url = await self.call(self.api.upload_image, image.filename, image.data, image.mime, repeatable=True)
            self.ledger.cache(IMAGE_KIND, image.sha256, url)
        return url

    async def _upload_cover(self, cover: LoadedImage) -> str:
        # A media_id belongs to one account, so the cache key names the account too.
        key = f"{self.api.app_id}:{cover.sha256}"
        media_id = self.ledger.cached(COVER_KIND, key)
        if media_id is None:
            media_id = await self.call(self.api.add_cover, cover.filename, cover.data, cover.mime, repeatable=True)
            self.ledger.cache(COVER_KIND, key, media_id)
        return media_id

    async def _find_draft(self, since: float) -> str | None:
        items = await self.call(self.api.list_drafts, 0, LOOK_COUNT)
        return next((item["media_id"] for item in items if self._is_ours(item, since)), None)

    # --- publish and mass send --------------------------------------------------------------

    async def publish(self, media_id: str) -> tuple[str, bool]:
        """Submit the draft (unless a submit is recorded) and poll until it is out; return
        (detail, resumed)."""
        url = self.recorded("published")
        if url is not None:
            return _published_line("already published", url), True
        publish_id = self.recorded("publish_id")
        if publish_id is not None:
            return _published_line("published", await self._poll(publish_id)), True
        started = self.recorded("publish_started")
        if started is not None:
            found = await self._find_published(float(started))
            if found is not None:
                self.record("published", found)
                return _published_line("published (found from an interrupted run)", found), True
            self._refuse_early_resubmit(float(started))
        publish_id, found = await self._submit(media_id)
        if publish_id is None:
            return _published_line("published (found after a lost reply)", found or ""), False
        return _published_line("published", await self._poll(publish_id)), False

    async def _submit(self, media_id: str) -> tuple[str, None] | tuple[None, str]:
        """Submit the draft and record its publish_id; after a lost reply, return instead the URL
        of the article it published, if one is found."""
        started = self._start("publish")
        try:
            publish_id = await self.call(self.api.submit_publish, media_id)
        except UncertainDeliveryError as exc:
            found = await self._find_published(started)
            if found is None:
                raise _unknown_submit(str(exc), started, reply=exc.reply) from exc
            self.record("published", found)
            return None, found
        self.record("publish_id", publish_id)
        return publish_id, None

    def _refuse_early_resubmit(self, started: float) -> None:
        """Raise UncertainDeliveryError unless the unanswered submit begun at `started` is old
        enough that finding nothing published proves it did not publish."""
        if self.ledger.clock() - started < RESUBMIT_AFTER_SECONDS:
            raise _unknown_submit("wechat freepublish/submit of an earlier run got no reply", started)

    async def _poll(self, publish_id: str) -> str:
        """Ask freepublish/get under a polling policy until the job ends; return the article URL.
        Every failure to ask is retried like "still publishing", until publish_wait_seconds."""
        wechat = self.settings.channels.wechat
        polling = RetryPolicy(attempts=POLL_ATTEMPTS, base_delay_seconds=wechat.publish_poll_seconds,
                              max_delay_seconds=POLL_CAP_SECONDS, deadline_seconds=wechat.publish_wait_seconds)
        try:
            reply = await polling.run(lambda: self._poll_once(publish_id))
        except _StillPublishing as exc:
            raise UncertainDeliveryError(
                f"wechat publish {publish_id} is still publishing after {wechat.publish_wait_seconds:g} s; "
                "re-run later to check on it (it is not submitted again)") from exc
        items = (reply.get("article_detail") or {}).get("item") or [{}]
        url = str(items[0].get("article_url", ""))
        self.record("published", url)
        return url

    async def _poll_once(self, publish_id: str) -> dict:
        """Ask freepublish/get once and return its reply when the article is out; raise
        _StillPublishing while the job runs and PermanentDeliveryError when it failed."""
        reply = await asyncio.to_thread(self.api.publish_status, publish_id)
        status = reply.get("publish_status")
        if status == 1:
            raise _StillPublishing(f"wechat publish {publish_id} is still publishing",
                                   retry_after_seconds=self.settings.channels.wechat.publish_poll_seconds)
        if status != 0:
            meaning = PUBLISH_FAILURES.get(status, f"unknown publish_status {status}")
            raise PermanentDeliveryError(f"wechat publish {publish_id}: {meaning} (publish_status {status})",
                                         reply=json.dumps(reply, ensure_ascii=False)[:2000])
        return reply

    async def _find_published(self, since: float) -> str | None:
        items = await self.call(self.api.list_published, 0, LOOK_COUNT)
        item = next((item for item in items if self._is_ours(item, since)), None)
        return None if item is None else str(_first_article(item).get("url", ""))

    async def mass_send(self, media_id: str) -> tuple[str, bool]:
        """Send the draft to all followers (or the configured tag) once; return (detail, resumed)."""
        msg_id = self.recorded("mass_msg_id")
        if msg_id is not None:
            return f"already mass-sent: msg_id {msg_id}", True
        clientmsgid = "d-" + hashlib.sha256(self.key.encode("utf-8")).hexdigest()[:40]
        # WeChat refuses a repeated clientmsgid (45065, counted as sent), so a lost reply may be retried.
        reply = await self.call(self.api.send_to_all, media_id, tag_id=self.settings.channels.wechat.tag_id,
                                clientmsgid=clientmsgid, repeatable=True)
        msg_id = str(reply.get("msg_id", ""))
        self.record("mass_msg_id", msg_id)
        how = "mass send already accepted by WeChat" if reply.get("errcode") == 45065 else "mass send accepted"
        return f"{how}: msg_id {msg_id}", False

    # --- looking before making again ---------------------------------------------------------

    def _start(self, step: str) -> float:
        """Record that `step`'s call is about to go out, so a later run knows to look first."""
        started = self.ledger.clock()
        self.record(f"{step}_started", repr(started))
        return started

    def _is_ours(self, item: dict, since: float) -> bool:
        article = _first_article(item)
        updated = item.get("update_time") or (item.get("content") or {}).get("update_time")
        return (article.get("title") == self.rendition.title
                and article.get("content_source_url", "") == self.rendition.content_source_url
                and (updated is None or float(updated) >= since - CLOCK_SKEW_SECONDS))


def _unknown_submit(what: str, started: float, *, reply: str | None = None) -> UncertainDeliveryError:
    """Say that a submit may or may not have published, where to look, and when a re-run may
    submit again."""
    again = datetime.fromtimestamp(started + RESUBMIT_AFTER_SECONDS).astimezone()
    return UncertainDeliveryError(
        f"{what}; whether the article is being published is unknown and no published article was "
        "found yet: check the publish records in the WeChat console (mp.weixin.qq.com); "
        f"re-run after {again:%Y-%m-%d %H:%M:%S %z}, which looks again and submits again only if "
        "nothing was published", reply=reply)


def _published_line(how: str, url: str) -> str:
    return f"{how}: {url or 'no article URL given'}"


def _first_article(item: dict) -> dict:
    news = (item.get("content") or {}).get("news_item") or [{}]
    return news[0]

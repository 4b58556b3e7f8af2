"""Publish an issue to a WeChat Official Account: draft, then publish or mass send, resumably.

These are the channel's steps; the core's step run (`distributor.delivery.step_run`) runs them under
the issue's lease "wechat:<issue key>", puts every call through the retry policy and records each
step the moment WeChat returns it, so a re-run starts after the last recorded step: never a second
draft, never a second publish or mass send. The draft is recorded with the content hash of the issue
file it was made from ("draft_hash"); after the file is edited, a run brings the draft up to date in
place (draft/update) unless a publish has begun or a mass send is recorded, in which case the draft is
left alone and the outcome says the edit was not sent. draft/add and freepublish/submit take no
idempotency key, so a "<step>_started" checkpoint is written before each; when the reply is lost, or
a run died during the call, the account is searched for what the call may have made (same title and
original URL, updated after the attempt began) before it is made again. A submit whose outcome is
unknown is not made again before RESUBMIT_AFTER_SECONDS have passed since it began: publishing is
asynchronous, so an empty freepublish/batchget right after it proves nothing, but WeChat lists an
article within seconds of it being published and never lists a failed one, so still finding nothing
after that long means the submit did not publish. Waiting for a publish job to finish is a poll.

A submit that WeChat refused (publish_status 2 to 4: the article did not go out and the draft stays)
is recorded as such, and the run after an edit of the issue file updates the draft and submits it
again; without an edit the same refusal is reported without asking again.

The steps call a `WechatClient` and fetch remote images through a `Fetch`, both chosen once where the
run is set up (`wechat_steps`): the API client and HTTP, or for a dry run the console client.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol, TextIO
from urllib.parse import urlsplit

from distributor.channel import KeyValueCache, StepContext
from distributor.channels.wechat.api import API_UNAUTHORIZED, MODE_VERBS, WechatApi, WechatApiConfig, mode_that_works
from distributor.channels.wechat.article import WechatRendition, limit_violations
from distributor.channels.wechat.console_client import ConsoleWechatClient
from distributor.channels.wechat.images import (
    Fetch,
    LoadedImage,
    fetch_over_http,
    load_content_image,
    load_cover,
    needs_upload,
    replace_image_sources,
)
from distributor.errors import (
    ChannelStoppedError,
    InputError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from distributor.models import Issue
from distributor.settings import Settings, secret_from_env

TOKEN_KIND, IMAGE_KIND, COVER_KIND = "wechat-token", "wechat-image", "wechat-cover"
RESUBMIT_AFTER_SECONDS = 600.0
# Server and local clocks may disagree; a found item this much older than the attempt still counts.
CLOCK_SKEW_SECONDS = 600.0
# Lists are newest first; what an attempt of this run made is on the first page.
LOOK_COUNT = 20
PUBLISH_FAILURES = {
    2: "the originality check failed", 3: "publishing failed", 4: "the platform's review rejected it",
    5: "the account deleted it after publishing", 6: "the platform banned it after publishing",
}
# With these the article never went out and the draft stays in the draft box: an edit may fix it.
NOT_PUBLISHED = (2, 3, 4)
SUBMIT_AFTER_EDIT = "edit the issue file and publish again: the draft is updated and submitted again"
NO_COVER = "WeChat needs a cover: set cover in the front matter or channels.wechat.default_cover"
EDIT_NOT_SENT = "the article was already published or mass-sent, so this edit of the issue file was not sent"
# Once one of these is recorded the draft may be out (or being published): it is never changed again.
SENT_STEPS = ("publish_started", "publish_id", "published", "mass_msg_id")


class WechatClient(Protocol):
    """The Official Account calls the steps make, one blocking call each: `WechatApi`, or the console
    client of a dry run."""

    @property
    def app_id(self) -> str: ...

    def upload_image(self, name: str, data: bytes, mime: str) -> str: ...

    def add_cover(self, name: str, data: bytes, mime: str) -> str: ...

    def add_draft(self, articles: list[dict]) -> str: ...

    def update_draft(self, media_id: str, index: int, article: dict) -> None: ...

    def delete_draft(self, media_id: str) -> None: ...

    def list_drafts(self, offset: int, count: int) -> list[dict]: ...

    def submit_publish(self, media_id: str) -> str: ...

    def publish_status(self, publish_id: str) -> dict: ...

    def list_published(self, offset: int, count: int) -> list[dict]: ...

    def send_to_all(self, media_id: str, *, tag_id: int | None, clientmsgid: str) -> dict: ...

    def send_preview(self, media_id: str, towxname: str) -> dict: ...

    def may_use(self, mode: str) -> bool: ...


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
    updated: bool = False     # brought up to date with an edited issue file by this run


class _StillPublishing(TransientDeliveryError):
    """The publish job is still running: ask again later."""


class _NotPublished(PermanentDeliveryError):
    """WeChat refused to publish the draft (publish_status 2 to 4): it stays in the draft box."""


class CachedTokenStore:
    """Keep access tokens in a cache that outlives the process (kind "wechat-token": the ledger's), so
    separate runs share one."""

    def __init__(self, cache: KeyValueCache):
        self._cache = cache

    def load(self, app_id: str) -> tuple[str, float] | None:
        """Return the saved (token, expires_at) unless it has expired."""
        saved = self._cache.cached(TOKEN_KIND, app_id)
        if saved is None:
            return None
        value = json.loads(saved)
        return value["token"], float(value["expires_at"])

    def save(self, app_id: str, token: str, expires_at: float) -> None:
        """Remember the token until `expires_at` (epoch seconds)."""
        value = json.dumps({"token": token, "expires_at": expires_at})
        self._cache.cache(TOKEN_KIND, app_id, value, expires_at)

    def drop(self, app_id: str) -> None:
        """Forget the app's token."""
        self._cache.uncache(TOKEN_KIND, app_id)


def wechat_api(settings: Settings, cache: KeyValueCache) -> WechatApi:
    """Return the API client the settings describe, its token kept in `cache`."""
    wechat = settings.channels.wechat
    if not wechat.app_id:
        raise InputError("channels.wechat.app_id is not set")
    secret = secret_from_env(wechat.app_secret_env, "the WeChat AppSecret")
    config = WechatApiConfig(wechat.app_id, secret, base_url=wechat.base_url,
                             timeout_seconds=wechat.timeout_seconds)
    return WechatApi(config, CachedTokenStore(cache))


def wechat_steps(rendition: WechatRendition, issue: Issue, settings: Settings, cache: KeyValueCache, *,
                 to_wechat: str | None = None, sink: TextIO | None = None) -> WechatSteps:
    """Return the steps of a publish: calls to the API client the settings describe (its token kept in
    `cache`) and remote images fetched over HTTP; with `sink` (a dry run), the console client shows on
    `sink` each call it would make, and no remote image is downloaded."""
    if sink is not None:
        console = ConsoleWechatClient(sink, settings.channels.wechat.app_id or "")
        return WechatSteps(rendition, issue, settings, console, console.fetch_image, to_wechat)
    return WechatSteps(rendition, issue, settings, wechat_api(settings, cache), fetch_over_http, to_wechat)


class WechatSteps:
    """The steps of one publish of the article, in the configured mode, or of a preview of its draft
    sent to the WeChat account `to_wechat`. The step run hands them a `StepContext`; `client` makes
    the calls and `fetch` gets the remote images."""

    def __init__(self, rendition: WechatRendition, issue: Issue, settings: Settings, client: WechatClient,
                 fetch: Fetch, to_wechat: str | None = None):
        self.rendition, self.issue, self.settings = rendition, issue, settings
        self.client, self.fetch, self.to_wechat = client, fetch, to_wechat
        self.key, self.content_hash, self.source = issue.key, issue.content_hash, str(issue.source_path)

    async def run(self, context: StepContext) -> WechatOutcome:
        """Check the limits, load every image and the cover (InputError naming the field, image or
        limit) before any call, make or update the draft, then send it on as the mode (or
        `to_wechat`) says."""
        problems = limit_violations(self.rendition)
        if problems:
            raise InputError("; ".join(problems), path=self.source)
        return await _WechatRun(self, context).steps()


class _WechatRun:
    """One run of the steps: what they do with the context, the client and the issue."""

    def __init__(self, steps: WechatSteps, context: StepContext):
        self.rendition, self.settings, self.client = steps.rendition, steps.settings, steps.client
        self.fetch, self.to_wechat = steps.fetch, steps.to_wechat
        self.key, self.content_hash, self.source = steps.key, steps.content_hash, steps.source
        self.issue = steps.issue
        self.context = context
        self.context.step = "draft"

    async def steps(self) -> WechatOutcome:
        mode = "preview" if self.to_wechat else self.settings.channels.wechat.mode
        if mode in ("publish", "mass") and not any(self.context.recorded(step) is not None for step in SENT_STEPS):
            await self._require_permission(mode)
        draft = await self.draft()
        if mode == "draft":
            return WechatOutcome(mode, draft.media_id, draft.detail, draft.resumed)
        if mode == "preview":
            self.context.step = "preview"
            await self.context.call(self.client.send_preview, draft.media_id, self.to_wechat)
            return WechatOutcome(mode, draft.media_id, f"preview sent to {self.to_wechat}; {draft.detail}",
                                 draft.resumed)
        step = self.publish if mode == "publish" else self.mass_send
        line, step_resumed = await step(draft.media_id)
        if draft.edit_not_sent:
            line = f"{line}; {EDIT_NOT_SENT}"
        elif draft.updated:
            line = f"{draft.detail}; {line}"
        return WechatOutcome(mode, draft.media_id, line, draft.resumed or step_resumed)

    async def _require_permission(self, mode: str) -> None:
        """Stop before the draft when the account may not send it on in `mode`, naming the mode that works."""
        self.context.step = mode
        if await self.context.call(self.client.may_use, mode, repeatable=True):
            return
        may_publish = mode == "mass" and await self.context.call(self.client.may_use, "publish", repeatable=True)
        works = mode_that_works(mode, may_publish=may_publish)
        then = ("; in mode draft it is published from the web console (mp.weixin.qq.com)" if works == "draft"
                else "")
        raise ChannelStoppedError(
            f"the account {self.client.app_id} may not {MODE_VERBS[mode]} (errcode {API_UNAUTHORIZED}, api "
            f"unauthorized: since 2025 WeChat grants it to verified accounts only); nothing was sent: set "
            f"channels.wechat.mode: {works}{then}")

    # --- draft ------------------------------------------------------------------------------

    async def draft(self) -> _Draft:
        """Return the issue's draft, made if none is recorded and brought up to date in place
        if the issue file changed since and the article has not gone out."""
        media_id = self.context.recorded("draft")
        if media_id is None:
            return await self._make_draft()
        if self.context.recorded("draft_hash") == self.content_hash:
            return _Draft(media_id, True, f"draft already created: media_id {media_id}")
        if any(self.context.recorded(step) is not None for step in SENT_STEPS):
            return _Draft(media_id, True, f"{EDIT_NOT_SENT}: media_id {media_id}", edit_not_sent=True)
        if self.context.recorded("parts") not in (None, str(len(self.rendition.articles))):
            return await self._replace_draft(media_id)
        return await self._update_draft(media_id, "draft updated with the edited issue")

    async def _make_draft(self) -> _Draft:
        media = await self._media()
        begun = self.context.recorded("draft_started")
        found = None if begun is None else await self._find_draft(float(begun))
        if found is not None:
            self.context.record("draft", found)
            # draft_hash names the file the interrupted run made its draft from.
            if self.context.recorded("draft_hash") == self.content_hash:
                return _Draft(found, True, f"draft found from an interrupted run: media_id {found}")
            return await self._update_draft(found, "draft found from an interrupted run and updated", media)
        articles = await self._articles(*media)
        self.context.step = "draft"
        self.context.record("draft_hash", self.content_hash)
        self.context.record("parts", str(len(articles)))
        started = self.context.start("draft")
        try:
            media_id, how = await self.context.call(self.client.add_draft, articles), "draft created"
        except UncertainDeliveryError:
            found = await self._find_draft(started)
            media_id, how = ((found, "draft found after a lost reply") if found is not None
                             else (await self.context.call(self.client.add_draft, articles), "draft created"))
        self.context.record("draft", media_id)
        return _Draft(media_id, False, f"{how}: media_id {media_id}{_articles_note(len(articles))}")

    async def _update_draft(self, media_id: str, how: str,
                            media: tuple[list[LoadedImage], LoadedImage] | None = None) -> _Draft:
        articles = await self._articles(*(media or await self._media()))
        # Putting the same article twice changes nothing, so a lost reply may be retried.
        self.context.step = "draft"
        for index, article in enumerate(articles):
            await self.context.call(self.client.update_draft, media_id, index, article, repeatable=True)
        self.context.record("draft_hash", self.content_hash)
        return _Draft(media_id, True, f"{how}: media_id {media_id}{_articles_note(len(articles))}", updated=True)

    async def _replace_draft(self, media_id: str) -> _Draft:
        """The edit changed how many articles the issue is split into, which draft/update cannot: make
        the draft anew, then delete the old one, so the account still holds one draft of the issue."""
        self.context.forget("draft")
        self.context.forget("draft_started")
        made = await self._make_draft()
        self.context.step = "draft"
        await self.context.call(self.client.delete_draft, media_id, repeatable=True)
        return replace(made, detail=f"{made.detail}, replacing draft {media_id} (the edit changed the number "
                                    "of articles)", updated=True)

    async def _media(self) -> tuple[list[LoadedImage], LoadedImage]:
        """Load and check every image and the cover, before anything is uploaded."""
        self.context.step = "images"
        if not self.rendition.cover:
            raise InputError(NO_COVER, path=self.source)
        return await self.context.call(self._load_media)

    def _load_media(self) -> tuple[list[LoadedImage], LoadedImage]:
        images = []
        for url in self.rendition.images:
            if needs_upload(url):
                try:
                    images.append(load_content_image(url, self.settings, self.fetch))
                except InputError as exc:
                    raise InputError(exc.args[0], path=self.source, line=self._line_of(url)) from None
        return images, load_cover(self.rendition.cover or "", self.settings, self.fetch)

    def _line_of(self, url: str) -> int | None:
        """The line of the issue file that names the image (as written: absolute, or its path)."""
        issue = self.issue
        for needle in (url, urlsplit(url).path):
            index = issue.body_markdown.find(needle) if needle else -1
            if index >= 0:
                return issue.body_first_line + issue.body_markdown.count("\n", 0, index)
        return None

    async def _articles(self, images: list[LoadedImage], cover: LoadedImage) -> list[dict]:
        """The draft's articles (the issue, or its parts), their images uploaded and the cover added."""
        self.context.step = "images"
        uploaded: dict[str, str] = {}
        for image in images:
            uploaded[image.url] = await self._upload_image(image)
            self.context.record("images", f"{len(uploaded)}/{len(images)}")
        if not images:
            self.context.record("images", "0/0")
        parts = [replace(part, content=replace_image_sources(part.content, uploaded))
                 for part in self.rendition.articles]
        # Checked before any upload with every URL at its longest; this is the content as it goes out.
        problems = limit_violations(replace(self.rendition, parts=tuple(parts), images=tuple(uploaded.values())))
        if problems:
            raise InputError("; ".join(problems), path=self.source)
        self.context.step = "cover"
        thumb_media_id = await self._upload_cover(cover)
        self.context.record("cover", thumb_media_id)
        wechat = self.settings.channels.wechat
        return [{"title": part.title, "author": self.rendition.author, "digest": part.digest,
                 "content": part.content, "content_source_url": self.rendition.content_source_url,
                 "thumb_media_id": thumb_media_id,
                 "need_open_comment": int(wechat.need_open_comment),
                 "only_fans_can_comment": int(wechat.only_fans_can_comment)} for part in parts]

    async def _upload_image(self, image: LoadedImage) -> str:
        url = self.context.cache.cached(IMAGE_KIND, image.sha256)
        if url is None:
            url = await self.context.call(self.client.upload_image, image.filename, image.data, image.mime,
                                          repeatable=True)
            self.context.cache.cache(IMAGE_KIND, image.sha256, url)
        return url

    async def _upload_cover(self, cover: LoadedImage) -> str:
        # A media_id belongs to one account, so the cache key names the account too.
        key = f"{self.client.app_id}:{cover.sha256}"
        media_id = self.context.cache.cached(COVER_KIND, key)
        if media_id is None:
            media_id = await self.context.call(self.client.add_cover, cover.filename, cover.data, cover.mime,
                                               repeatable=True)
            self.context.cache.cache(COVER_KIND, key, media_id)
        return media_id

    async def _find_draft(self, since: float) -> str | None:
        items = await self.context.call(self.client.list_drafts, 0, LOOK_COUNT)
        return next((item["media_id"] for item in items if self._is_ours(item, since)), None)

    # --- publish and mass send --------------------------------------------------------------

    async def publish(self, media_id: str) -> tuple[str, bool]:
        """Submit the draft (unless a submit is recorded) and poll until it is out; return
        (detail, resumed)."""
        self.context.step = "publish"
        url = self.context.recorded("published")
        if url is not None:
            return _published_line("already published", url), True
        publish_id = self.context.recorded("publish_id")
        if publish_id is not None:
            return _published_line("published", await self._poll(publish_id)), True
        started = self.context.recorded("publish_started")
        if started is not None:
            found = await self._find_published(float(started))
            if found is not None:
                self.context.record("published", found)
                return _published_line("published (found from an interrupted run)", found), True
            self._refuse_early_resubmit(float(started))
        how = self._after_refused_submit()
        publish_id, found = await self._submit(media_id)
        if publish_id is None:
            return how + _published_line("published (found after a lost reply)", found or ""), False
        return how + _published_line("published", await self._poll(publish_id)), False

    def _after_refused_submit(self) -> str:
        """Say how this submit follows one that WeChat refused: raise PermanentDeliveryError when the
        draft is the one it refused (the issue file was not edited since), else return the words that
        begin the outcome line ("" when no submit was refused)."""
        refused = self.context.recorded("publish_refused")
        if refused is None:
            return ""
        earlier = json.loads(refused)
        if earlier["draft_hash"] == self.context.recorded("draft_hash"):
            raise PermanentDeliveryError(f"{earlier['reason']}; the issue file has not changed since, so it is "
                                         f"not submitted again: {SUBMIT_AFTER_EDIT}")
        return f"submitted again after the edit (WeChat refused the earlier submit: {earlier['reason']}); "

    async def _submit(self, media_id: str) -> tuple[str, None] | tuple[None, str]:
        """Submit the draft and record its publish_id; after a lost reply, return instead the URL
        of the article it published, if one is found."""
        started = self.context.start("publish")
        try:
            publish_id = await self.context.call(self.client.submit_publish, media_id)
        except UncertainDeliveryError as exc:
            found = await self._find_published(started)
            if found is None:
                raise _unknown_submit(str(exc), started, reply=exc.reply) from exc
            self.context.record("published", found)
            return None, found
        self.context.record("publish_id", publish_id)
        self.context.forget("publish_refused")
        return publish_id, None

    def _refuse_early_resubmit(self, started: float) -> None:
        """Raise UncertainDeliveryError unless the unanswered submit begun at `started` is old
        enough that finding nothing published proves it did not publish."""
        if self.context.clock() - started < RESUBMIT_AFTER_SECONDS:
            raise _unknown_submit("wechat freepublish/submit of an earlier run got no reply", started)

    async def _poll(self, publish_id: str) -> str:
        """Ask freepublish/get until the job ends; return the article URL. Every failure to ask is
        asked again like "still publishing", until publish_wait_seconds."""
        wechat = self.settings.channels.wechat
        try:
            reply = await self.context.poll(lambda: self._poll_once(publish_id),
                                            every_seconds=wechat.publish_poll_seconds,
                                            for_seconds=wechat.publish_wait_seconds)
        except _NotPublished as exc:
            # The draft stays and nothing went out: the draft may be updated and submitted again.
            self.context.record("publish_refused", json.dumps({"publish_id": publish_id, "reason": str(exc),
                                                               "draft_hash": self.context.recorded("draft_hash")},
                                                              ensure_ascii=False))
            self.context.forget("publish_id")
            self.context.forget("publish_started")
            raise PermanentDeliveryError(f"{exc}; {SUBMIT_AFTER_EDIT}", reply=exc.reply) from None
        except _StillPublishing as exc:
            raise UncertainDeliveryError(
                f"wechat publish {publish_id} is still publishing after {wechat.publish_wait_seconds:g} s; "
                "re-run later to check on it (it is not submitted again)") from exc
        items = (reply.get("article_detail") or {}).get("item") or [{}]
        url = str(items[0].get("article_url", ""))
        self.context.record("published", url)
        return url

    def _poll_once(self, publish_id: str) -> dict:
        """Ask freepublish/get once and return its reply when the article is out; raise
        _StillPublishing while the job runs and PermanentDeliveryError when it failed."""
        reply = self.client.publish_status(publish_id)
        status = reply.get("publish_status")
        if status == 1:
            raise _StillPublishing(f"wechat publish {publish_id} is still publishing",
                                   retry_after_seconds=self.settings.channels.wechat.publish_poll_seconds)
        if status != 0:
            known = PUBLISH_FAILURES.get(status) if isinstance(status, int) else None    # the reply is any JSON
            meaning = known or f"unknown publish_status {status}"
            failed = _NotPublished if status in NOT_PUBLISHED else PermanentDeliveryError
            raise failed(f"wechat publish {publish_id}: {meaning} (publish_status {status})",
                         reply=json.dumps(reply, ensure_ascii=False)[:2000])
        return reply

    async def _find_published(self, since: float) -> str | None:
        items = await self.context.call(self.client.list_published, 0, LOOK_COUNT)
        item = next((item for item in items if self._is_ours(item, since)), None)
        return None if item is None else str(_first_article(item).get("url", ""))

    async def mass_send(self, media_id: str) -> tuple[str, bool]:
        """Send the draft to all followers (or the configured tag) once; return (detail, resumed)."""
        self.context.step = "mass send"
        msg_id = self.context.recorded("mass_msg_id")
        if msg_id is not None:
            return f"already mass-sent: msg_id {msg_id}", True
        clientmsgid = "d-" + hashlib.sha256(self.key.encode("utf-8")).hexdigest()[:40]
        # WeChat refuses a repeated clientmsgid (45065, counted as sent), so a lost reply may be retried.
        reply = await self.context.call(self.client.send_to_all, media_id,
                                        tag_id=self.settings.channels.wechat.tag_id,
                                        clientmsgid=clientmsgid, repeatable=True)
        msg_id = str(reply.get("msg_id", ""))
        self.context.record("mass_msg_id", msg_id)
        how = "mass send already accepted by WeChat" if reply.get("errcode") == 45065 else "mass send accepted"
        return f"{how}: msg_id {msg_id}", False

    # --- looking before making again ---------------------------------------------------------

    def _is_ours(self, item: dict, since: float) -> bool:
        article = _first_article(item)
        updated = item.get("update_time") or (item.get("content") or {}).get("update_time")
        return (article.get("title") == self.rendition.articles[0].title
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


def _articles_note(count: int) -> str:
    return f" ({count} articles: the issue did not fit one)" if count > 1 else ""


def _first_article(item: dict) -> dict:
    news = (item.get("content") or {}).get("news_item") or [{}]
    return news[0]

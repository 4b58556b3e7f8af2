"""The WeChat channel: one Official Account article, made a draft and then published or mass-sent."""
from __future__ import annotations

from typing import TextIO

from distributor.channel import KeyValueCache, LeaseTimes, RecordedSteps, RenditionSummary, ServiceCheck, StepChannel
from distributor.channels.wechat.api import API_UNAUTHORIZED, MODE_VERBS, PERMISSION_PROBES, mode_that_works
from distributor.channels.wechat.article import WechatRendition, content_as_sent, limit_violations, render_wechat
from distributor.channels.wechat.publisher import WechatSteps, wechat_api, wechat_steps
from distributor.channels.wechat.settings import WechatSettings
from distributor.channels.wechat.state import WechatState, wechat_state
from distributor.errors import DeliveryError
from distributor.models import Body, Issue
from distributor.settings import Settings, missing_env


class WechatChannel(StepChannel):
    name = "wechat"
    label = "WeChat"
    settings_class = WechatSettings

    def render(self, issue: Issue, body: Body, settings: Settings) -> WechatRendition:
        return render_wechat(issue, body, settings)

    def summary(self, rendition: WechatRendition) -> RenditionSummary:
        return RenditionSummary(len(rendition.content.encode()), len(rendition.references), len(rendition.images))

    def preview_files(self, rendition: WechatRendition, issue: Issue, settings: Settings) -> dict[str, bytes]:
        """The article as one page; a split issue's articles also one file each, as the draft holds them."""
        files = {"wechat.html": rendition.content.encode("utf-8")}
        if len(rendition.articles) > 1:
            files.update({f"wechat-{index}.html": part.content.encode("utf-8")
                          for index, part in enumerate(rendition.articles, start=1)})
        return files

    def refusals(self, rendition: WechatRendition) -> list[str]:
        return limit_violations(rendition)

    def configuration_problems(self, settings: Settings, *, test_copy: bool = False) -> list[str]:
        wechat = settings.channels.wechat
        no_app_id = "channels.wechat.app_id is not set (or set channels.wechat.enabled: false)"
        problems = [] if wechat.app_id else [no_app_id]
        return problems + missing_env(wechat.app_secret_env, "the WeChat AppSecret")

    def check(self, settings: Settings, cache: KeyValueCache) -> ServiceCheck | None:
        app_id = settings.channels.wechat.app_id
        if not app_id:
            return None
        mode = settings.channels.wechat.mode
        try:
            api = wechat_api(settings, cache)
            api.access_token()
            allowed = {way: api.may_use(way) for way in PERMISSION_PROBES}
        except DeliveryError as exc:
            return ServiceCheck("wechat", False, str(exc))
        ways = "; ".join(f"may {MODE_VERBS[way]}: {'yes' if ok else f'no (errcode {API_UNAUTHORIZED})'}"
                         for way, ok in allowed.items())
        if mode != "draft" and not allowed[mode]:
            works = mode_that_works(mode, may_publish=allowed["publish"])
            return ServiceCheck("wechat", False, f"access token fetched for {app_id}; {ways}: channels.wechat.mode "
                                                 f"{mode} cannot work for this account, mode {works} can")
        return ServiceCheck("wechat", True, f"access token fetched for {app_id}; {ways}")

    def describe(self, rendition: WechatRendition, settings: Settings) -> str:
        wechat = settings.channels.wechat
        content, uploads = content_as_sent(rendition)
        count = len(rendition.articles)
        what = f"article {rendition.title!r}" if count == 1 else f"draft of {count} articles {rendition.title!r}"
        longest = "at most" if count == 1 else "the longest"
        return (f"a {wechat.mode} {what} for account {wechat.app_id or '(app_id not set)'}, "
                f"{longest} {len(content)} characters as sent, {uploads} images to upload")

    def steps(self, rendition: WechatRendition, issue: Issue, settings: Settings, cache: KeyValueCache, *,
              sink: TextIO | None = None, preview_to: str | None = None) -> WechatSteps:
        return wechat_steps(rendition, issue, settings, cache, to_wechat=preview_to, sink=sink)

    def lease_times(self, settings: Settings) -> LeaseTimes:
        wechat = settings.channels.wechat
        return LeaseTimes(wechat.lease_seconds, wechat.lease_wait_seconds)

    def state(self, recorded: RecordedSteps, issue: Issue, settings: Settings,
              publish_command: str) -> WechatState | None:
        return wechat_state(recorded, issue.content_hash, publish_command, settings.channels.wechat.mode)

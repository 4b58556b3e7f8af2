"""A WeChat client that stands in for the Official Account API in a dry run: it shows, calls nothing.

It takes the calls the steps make of `WechatApi` and answers each with a plausible id, so a dry run goes
through the real steps (limits, images read and checked, draft, publish or mass send) and only the
calls differ: one line per call it would make goes to its stream. Remote images are not
downloaded either: `fetch_image` says which would be, and hands the steps a stand-in image that
`upload_image` recognises, so the line of its upload names the URL it would come from.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TextIO

from distributor.channels.wechat.api import MODE_VERBS, PERMISSION_PROBES
from distributor.channels.wechat.images import SIGNATURES
from distributor.settings import Settings

# Starts as a png does, so the steps' checks take it; the URL it stands for follows.
_STAND_IN = next(signature for signature, kind in SIGNATURES if kind == "png") + b" not downloaded: "
_DRY_RUN_ARTICLE_URL = "https://mp.weixin.qq.com/s/dry-run"


class ConsoleWechatClient:
    """Show each Official Account call the steps would make on `stream`; make none."""

    def __init__(self, stream: TextIO, app_id: str):
        self._stream = stream
        self._app_id = app_id
        self._numbers: Iterator[int] = itertools.count(1)

    @property
    def app_id(self) -> str:
        return self._app_id

    def fetch_image(self, url: str, settings: Settings, what: str, limit: int) -> bytes:
        """Say that the image would be downloaded; return its stand-in."""
        self._show(f"would fetch {what} {url} (a dry run downloads nothing: it is not checked)")
        return _STAND_IN + url.encode("utf-8")

    def upload_image(self, name: str, data: bytes, mime: str) -> str:
        self._show(f"would upload image {self._source(name, data)} (media/uploadimg)")
        return f"http://mmbiz.qpic.cn/mmbiz_png/dry-run-{next(self._numbers)}/0?wx_fmt=png"

    def add_cover(self, name: str, data: bytes, mime: str) -> str:
        self._show(f"would add cover {self._source(name, data)} as permanent material (material/add_material)")
        return f"dry-run-cover-{next(self._numbers)}"

    def add_draft(self, articles: list[dict]) -> str:
        if len(articles) == 1:
            self._show(f"would add a draft {articles[0]['title']!r}, {len(articles[0]['content'])} characters "
                       "(draft/add)")
        else:
            shown = "; ".join(f"{article['title']!r}, {len(article['content'])} characters" for article in articles)
            self._show(f"would add a draft of {len(articles)} articles: {shown} (draft/add)")
        return f"dry-run-draft-{next(self._numbers)}"

    def update_draft(self, media_id: str, index: int, article: dict) -> None:
        self._show(f"would update article {index} of draft {media_id} with {len(article['content'])} characters "
                   "(draft/update)")

    def delete_draft(self, media_id: str) -> None:
        self._show(f"would delete draft {media_id} (draft/delete)")

    def list_drafts(self, offset: int, count: int) -> list[dict]:
        self._show("would look among the account's drafts (draft/batchget)")
        return []

    def submit_publish(self, media_id: str) -> str:
        self._show(f"would submit draft {media_id} for publishing (freepublish/submit)")
        return f"dry-run-publish-{next(self._numbers)}"

    def publish_status(self, publish_id: str) -> dict:
        self._show(f"would ask whether publish {publish_id} is out (freepublish/get)")
        return {"publish_status": 0, "article_detail": {"item": [{"article_url": _DRY_RUN_ARTICLE_URL}]}}

    def list_published(self, offset: int, count: int) -> list[dict]:
        self._show("would look among the published articles (freepublish/batchget)")
        return []

    def send_to_all(self, media_id: str, *, tag_id: int | None, clientmsgid: str) -> dict:
        target = "every follower" if tag_id is None else f"the followers tagged {tag_id}"
        self._show(f"would mass-send draft {media_id} to {target}, clientmsgid {clientmsgid} (message/mass/sendall)")
        return {"errcode": 0, "msg_id": f"dry-run-{next(self._numbers)}"}

    def may_use(self, mode: str) -> bool:
        self._show(f"would ask whether the account may {MODE_VERBS[mode]} ({PERMISSION_PROBES[mode][0]})")
        return True

    def send_preview(self, media_id: str, towxname: str) -> dict:
        self._show(f"would send a preview of draft {media_id} to {towxname} (message/mass/preview)")
        return {"errcode": 0}

    def _source(self, name: str, data: bytes) -> str:
        if data.startswith(_STAND_IN):
            return f"{data[len(_STAND_IN):].decode('utf-8')} (once fetched)"
        return f"{name} ({len(data) / 1024:.1f} KB)"

    def _show(self, line: str) -> None:
        print(f"  wechat: {line}", file=self._stream)


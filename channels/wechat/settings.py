"""The `channels.wechat` settings block."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

from distributor.validate.addresses import http_url_problem


@dataclass(frozen=True)
class WechatSettings:
    """`channels.wechat`: the Official Account, the publish mode, and how long its steps may wait."""

    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {"base_url": http_url_problem}
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "timeout_seconds": (0.01, None), "publish_poll_seconds": (0.01, None), "publish_wait_seconds": (0, None),
        "lease_seconds": (0.3, None), "lease_wait_seconds": (0, None)}

    enabled: bool = True
    app_id: str | None = None
    app_secret_env: str = "WECHAT_APP_SECRET"
    base_url: str = "https://api.weixin.qq.com/"
    mode: Literal["draft", "publish", "mass"] = "draft"
    author: str | None = None
    default_cover: str | None = None
    tag_id: int | None = None
    need_open_comment: bool = False
    only_fans_can_comment: bool = False
    timeout_seconds: float = 15.0
    # Mode publish: how often to ask whether the article is out, and how long to wait at most.
    publish_poll_seconds: float = 5.0
    publish_wait_seconds: float = 600.0
    # One run at a time drives an issue's WeChat steps, under a lease in the ledger renewed every third
    # of lease_seconds (a run that died loses it that long after); another run waits for it at most
    # lease_wait_seconds, then stops (exit 3).
    lease_seconds: float = 60.0
    lease_wait_seconds: float = 30.0

"""`distributor check`: reach the configured relay (and WeChat) the way a publish would, send nothing."""
from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

from distributor.channels.mail.relay import smtp_config
from distributor.channels.mail.smtp import check_relay
from distributor.errors import EXIT_FAILED, EXIT_OK, DeliveryError
from distributor.ledger.store import open_ledger
from distributor.settings import Settings


@dataclass(frozen=True)
class ServiceCheck:
    """How reaching one service went."""
    service: str         # "smtp" or "wechat"
    healthy: bool
    detail: str          # the relay's greeting and TLS, the token fetched, or why it failed

    def line(self) -> str:
        return f"{self.service}: {self.detail}"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `check` to the `distributor` command line."""
    check = subparsers.add_parser("check", help="connect and log in to the relay (and WeChat) without sending")
    check.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print one line per service an enabled channel needs; exit 1 when one of them cannot be used."""
    healthy = True
    for check in check_services(settings):
        print(check.line())
        healthy = healthy and check.healthy
    return EXIT_OK if healthy else EXIT_FAILED


def check_services(settings: Settings) -> Iterator[ServiceCheck]:
    """Connect, secure and log in to every service an enabled channel needs, one after the other;
    yield how each went as soon as it is known."""
    if settings.channels.email.enabled or settings.channels.text.enabled:
        try:
            relay = ServiceCheck("smtp", True, asyncio.run(check_relay(smtp_config(settings))))
        except DeliveryError as exc:
            relay = ServiceCheck("smtp", False, f"{exc}" + (f": {exc.reply}" if exc.reply else ""))
        yield relay
    wechat = settings.channels.wechat
    if wechat.enabled and wechat.app_id:
        from distributor.channels.wechat.publisher import wechat_api  # the WeChat client loads only for a check
        with open_ledger(settings.ledger) as ledger:
            try:
                wechat_api(settings, ledger).access_token()
                token = ServiceCheck("wechat", True, f"access token fetched for {wechat.app_id}")
            except DeliveryError as exc:
                token = ServiceCheck("wechat", False, str(exc))
        yield token

"""`distributor check`: reach the configured relay (and WeChat) the way a publish would, send nothing."""
from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import ExitStack

from distributor import registry
from distributor.channel import RowChannel, ServiceCheck
from distributor.delivery.send import group_of
from distributor.errors import EXIT_FAILED, EXIT_OK
from distributor.ledger.store import Ledger, open_ledger
from distributor.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `check` to the `distributor` command line."""
    check = subparsers.add_parser("check", help="connect and log in to the relay (and WeChat) without sending")
    check.add_argument("--dns", action="store_true",
                       help="also look up SPF, DKIM, DMARC and the bounce MX as receivers will (resolver: dns)")
    check.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print one line per service an enabled channel needs; exit 1 when one of them cannot be used."""
    healthy = True
    for check in check_services(settings, dns=args.dns):
        print(check.line())
        healthy = healthy and check.healthy
    return EXIT_OK if healthy else EXIT_FAILED


def check_services(settings: Settings, *, dns: bool = False) -> Iterator[ServiceCheck]:
    """Reach every service an enabled channel needs, one after the other (a transport group once), and
    with `dns` look up its records; yield how each went as soon as it is known."""
    checked: set[str] = set()
    with ExitStack() as stack:
        cache = _LedgerOnDemand(settings, stack)
        for name, channel in registry.channels().items():
            service = group_of(channel) if isinstance(channel, RowChannel) else name
            if not settings.channels[name].enabled or service in checked:
                continue
            checked.add(service)
            result = channel.check(settings, cache)
            if result is not None:
                yield result
            if dns:
                yield from channel.dns_checks(settings)


class _LedgerOnDemand:
    """The ledger's cache (a WeChat token, say), opened only when a check first uses it."""

    def __init__(self, settings: Settings, stack: ExitStack):
        self._settings, self._stack = settings, stack
        self._ledger: Ledger | None = None

    def _opened(self) -> Ledger:
        if self._ledger is None:
            self._ledger = self._stack.enter_context(open_ledger(self._settings.ledger))
        return self._ledger

    def cached(self, kind: str, key: str) -> str | None:
        return self._opened().cached(kind, key)

    def cache(self, kind: str, key: str, value: str, expires_at: float | None = None) -> None:
        self._opened().cache(kind, key, value, expires_at)

    def uncache(self, kind: str, key: str) -> None:
        self._opened().uncache(kind, key)

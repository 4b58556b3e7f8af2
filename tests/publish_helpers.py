"""Settings, runs and records shared by the tests that publish to the SMTP test server."""
from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from distributor.commands.publish import publish_and_report as publish
from distributor.delivery.publish import PublishOptions
from distributor.settings import load_settings

from .conftest import EXAMPLE, ROOT
from .conftest import UNSUBSCRIBE_SECRET as SECRET
from .smtp_server import FaultySmtpServer

LONG_UNSUBSCRIBE = "https://example.org/newsletter/unsubscribe/" + "x" * 130 + "/{token}"


def configure(tmp_path: Path, server: FaultySmtpServer, addresses: list[str], *, extra: str = "",
              smtp_extra: str = "") -> Path:
    subscribers = tmp_path / "subscribers.csv"
    subscribers.write_text("email,name\n" + "".join(f"{a},Reader {i}\n" for i, a in enumerate(addresses)),
                           encoding="utf-8")
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"""
channels:
  email:
    subscribers: {subscribers}
    from_name: 示例周报
    from_address: news@example.org
    reply_to: editors@example.org
    return_path: bounces@example.org
    unsubscribe_url: {LONG_UNSUBSCRIBE}
  wechat: {{enabled: false}}
  text: {{enabled: false}}
smtp:
  host: 127.0.0.1
  port: {server.port}
  security: plain
  pool_size: 3
  timeout_seconds: 1.0
{smtp_extra}
{fast_retry_and_ledger(tmp_path)}
{extra}""", encoding="utf-8")
    return settings


def run_publish(settings_path: Path, **options) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = publish(PublishOptions(issue=EXAMPLE, channels=(), yes=True, **options),
                     load_settings(settings_path), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def received_by(server: FaultySmtpServer) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in server.messages:
        for rcpt in message.rcpt_tos:
            counts[rcpt] = counts.get(rcpt, 0) + 1
    return counts


def ledger_rows(tmp_path: Path) -> dict[str, tuple]:
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    try:
        return {row[0]: row[1:] for row in db.execute("SELECT recipient, status, reply, last_error FROM deliveries")}
    finally:
        db.close()


def cli(settings: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET}
    if password is not None:
        environment["SMTP_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "distributor", "--settings", str(settings), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=environment)


def fast_retry_and_ledger(tmp_path: Path) -> str:
    """The settings YAML that every publish test shares: retries in milliseconds, a ledger in tmp_path."""
    return f"""retry:
  attempts: 3
  base_delay_seconds: 0.01
  max_delay_seconds: 0.05
ledger:
  path: {tmp_path / 'ledger.sqlite3'}"""

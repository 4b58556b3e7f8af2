"""`distributor publish` on every channel at once: a real SMTP server and the WeChat stand-in."""
from __future__ import annotations

import os
import subprocess
import sys

from .conftest import EXAMPLE, ROOT, UNSUBSCRIBE_SECRET
from .smtp_server import FaultySmtpServer
from .wechat_stub import WechatStub, sample_png


def setup(tmp_path, smtp: FaultySmtpServer, stub: WechatStub, *, board_image: bool = True):
    site = tmp_path / "site"
    (site / "images" / "example").mkdir(parents=True)
    (site / "images" / "example" / "cover.png").write_bytes(sample_png(b"cover"))
    if board_image:
        (site / "images" / "example" / "riscv-board.jpg").write_bytes(sample_png(b"board"))
    subscribers = tmp_path / "subscribers.csv"
    subscribers.write_text("email,name\na@example.org,A\nb@example.org,B\n", encoding="utf-8")
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"""
site:
  site_root: {site}
channels:
  email:
    subscribers: {subscribers}
  text:
    enabled: false
  wechat:
    app_id: {stub.app_id}
    base_url: {stub.base_url}
    timeout_seconds: 2.0
smtp:
  host: 127.0.0.1
  port: {smtp.port}
  security: plain
  timeout_seconds: 2.0
retry:
  base_delay_seconds: 0.01
ledger:
  path: {tmp_path / 'ledger.sqlite3'}
""", encoding="utf-8")
    return settings


def publish(settings, stub: WechatStub) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET,
                   "WECHAT_APP_SECRET": stub.app_secret}
    return subprocess.run([sys.executable, "-m", "distributor", "--settings", str(settings), "publish",
                           str(EXAMPLE), "--yes"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=environment)


def test_every_channel_delivers_once_and_a_rerun_sends_nothing(tmp_path):
    with FaultySmtpServer() as smtp, WechatStub() as stub:
        settings = setup(tmp_path, smtp, stub)
        first = publish(settings, stub)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "wechat: draft created" in first.stdout and "email: 2 sent" in first.stdout
        assert len(stub.drafts()) == 1 and len(smtp.messages) == 2
        again = publish(settings, stub)
        assert again.returncode == 0, again.stdout + again.stderr
        assert len(stub.drafts()) == 1 and len(smtp.messages) == 2
        assert len(stub.requests("media/uploadimg")) == 1


def test_a_missing_image_stops_everything_before_anything_is_sent(tmp_path):
    with FaultySmtpServer() as smtp, WechatStub() as stub:
        settings = setup(tmp_path, smtp, stub, board_image=False)
        result = publish(settings, stub)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1 and "riscv-board.jpg" in result.stderr
        assert smtp.connections_opened == 0 and stub.requests("draft/add") == []

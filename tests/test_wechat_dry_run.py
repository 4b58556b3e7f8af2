"""`publish --dry-run` runs the WeChat steps into the console client: each call it would make is shown,
none reaches the stand-in API, no remote image is downloaded, and nothing is recorded. Real CLI
processes, the stand-in on 127.0.0.1, a static server for remote images, a real ledger file."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from distributor.ledger.store import open_ledger
from distributor.render.issue import load_issue
from distributor.settings import LedgerSettings, SiteSettings

from .conftest import EXAMPLE
from .test_publish_wechat import cli, configure, publish_cli, serving, site_folder, write_issue
from .wechat_stub import WechatStub

SECRET_ENV = "WECHAT_APP_SECRET"


@pytest.fixture
def stub(monkeypatch):
    with WechatStub() as running:
        monkeypatch.setenv(SECRET_ENV, running.app_secret)
        yield running


@pytest.fixture
def site(tmp_path):
    return site_folder(tmp_path)


def wechat_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip().startswith("wechat: ")]


def test_a_dry_run_shows_each_call_and_the_stand_in_gets_none(tmp_path, stub, site):
    configure(tmp_path, stub, site_root=site, mode="publish")
    with serving(site) as (remote, served):
        issue = write_issue(tmp_path, images=("/images/a.png", f"{remote}/images/b.png"))
        result = publish_cli(tmp_path, issue, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = wechat_lines(result.stdout)
    assert f"wechat: would fetch image {remote}/images/b.png (a dry run downloads nothing: it is not checked)" in lines
    assert f"wechat: would upload image {remote}/images/b.png (once fetched) (media/uploadimg)" in lines
    # The site's own image is read from site_root and uploaded by its bytes, as a real run would.
    assert any(line.startswith("wechat: would upload image ") and line.endswith(" KB) (media/uploadimg)")
               for line in lines), lines
    assert any(line.startswith("wechat: would add cover ") for line in lines), lines
    assert any(line.startswith("wechat: would add a draft '泰晓资讯·第一期'") for line in lines), lines
    assert any(line.startswith("wechat: would submit draft dry-run-draft-") for line in lines), lines
    assert lines[-1] == "wechat: published: https://mp.weixin.qq.com/s/dry-run", lines
    assert stub.requests() == [] and served == []
    assert not (tmp_path / "ledger.sqlite3").exists()


def test_a_dry_run_goes_on_from_the_steps_a_real_run_recorded(tmp_path, stub, site):
    configure(tmp_path, stub, site_root=site)
    issue = write_issue(tmp_path)
    assert publish_cli(tmp_path, issue).returncode == 0
    (media_id,) = stub.drafts()
    seen = len(stub.requests())
    configure(tmp_path, stub, site_root=site, mode="mass")
    result = publish_cli(tmp_path, issue, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = wechat_lines(result.stdout)
    assert not any("would add a draft" in line or "would upload" in line for line in lines), lines
    assert any(line.startswith(f"wechat: would mass-send draft {media_id} to every follower") for line in lines)
    assert len(stub.requests()) == seen
    # Nothing was recorded: the real ledger still has the draft and no mass send.
    shown = cli(tmp_path, "status", str(issue)).stdout
    assert f"draft: media_id {media_id}" in shown and "msg_id" not in shown, shown


def test_a_missing_site_image_stops_the_dry_run_as_it_would_the_publish(tmp_path, stub, site):
    configure(tmp_path, stub, site_root=site)
    issue = write_issue(tmp_path, images=("/images/a.png", "/images/missing.png"))
    for args in (("--dry-run",), ()):
        result = publish_cli(tmp_path, issue, *args)
        assert result.returncode == 2, result.stdout + result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert "WeChat image https://example.org/images/missing.png not found: no file" in line
        assert str(site / "images" / "missing.png") in line
    assert stub.requests() == []


def test_the_bundled_example_dry_runs_its_wechat_steps_with_no_settings_and_no_network(tmp_path):
    # The README's first command: built-in defaults, no app_id, no site_root; HOME holds the default ledger path.
    environment = {key: value for key, value in os.environ.items() if key not in ("DISTRIBUTOR_SETTINGS", SECRET_ENV)}
    environment["HOME"] = str(tmp_path)

    def distributor(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "distributor", *args], capture_output=True, text=True,
                              cwd=tmp_path, env=environment, timeout=60)

    result = distributor("publish", str(EXAMPLE), "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "note: a real publish stops here: channels.wechat.app_id is not set" in result.stdout
    lines = wechat_lines(result.stdout)
    assert "wechat: would fetch image https://example.org/images/example/riscv-board.jpg " \
           "(a dry run downloads nothing: it is not checked)" in lines
    assert any(line.startswith("wechat: would add a draft '示例周报") for line in lines), lines
    assert lines[-1].startswith("wechat: draft created: media_id dry-run-draft-"), lines
    assert list(tmp_path.iterdir()) == []
    refused = distributor("publish", str(EXAMPLE), "--channel", "wechat", "--yes")
    assert refused.returncode == 2 and "channels.wechat.app_id is not set" in refused.stderr


def test_a_dry_run_neither_waits_for_nor_takes_a_lease_another_run_holds(tmp_path, stub, site):
    configure(tmp_path, stub, site_root=site)
    issue = write_issue(tmp_path)
    assert publish_cli(tmp_path, issue).returncode == 0
    key = load_issue(issue, SiteSettings()).key
    with open_ledger(LedgerSettings(path=str(tmp_path / "ledger.sqlite3"))) as ledger:
        held = ledger.take_lease(f"wechat:{key}", "a-real-run", 600)
    assert held.holder == "a-real-run"
    started = time.monotonic()
    result = publish_cli(tmp_path, issue, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 20      # lease_wait_seconds is 30: it did not wait for the lease
    assert any(line.startswith("wechat: draft") for line in wechat_lines(result.stdout)), result.stdout
    with open_ledger(LedgerSettings(path=str(tmp_path / "ledger.sqlite3"))) as ledger:
        assert ledger.lease(f"wechat:{key}").holder == "a-real-run"

"""Runs of one issue at the same moment: only one drives its WeChat steps, under a lease in the ledger.
Real CLI processes (`python -m distributor publish ... --channel wechat`) against the stand-in API."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import ROOT
from .publish_helpers import fast_retry_and_ledger
from .wechat_stub import WechatStub, sample_png

TRIES = 20
# The stand-in holds each draft/add this long, so a second run started with the first is still
# early enough to race it: before the lease, every try made two drafts.
DRAFT_ADD_SECONDS = 0.3
PROCESS_TIMEOUT_SECONDS = 60


def write_issue(folder: Path, number: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"issue-{number}.md"
    path.write_text(f"---\ntitle: 并发测试第 {number} 期\npermalink: /news/race-{number}/\n"
                    "cover: /images/cover.png\n---\n\n本周要闻。\n\n![图](/images/a.png)\n", encoding="utf-8")
    return path


def write_settings(folder: Path, stub: WechatStub, mode: str, *, lease_seconds: float = 60.0,
                   lease_wait_seconds: float = 30.0, publish_wait_seconds: float = 5.0,
                   timeout_seconds: float = 5.0) -> Path:
    site = folder / "site" / "images"
    site.mkdir(parents=True, exist_ok=True)
    (site / "cover.png").write_bytes(sample_png(b"cover"))
    (site / "a.png").write_bytes(sample_png(b"a"))
    path = folder / "settings.yaml"
    path.write_text(f"""
site:
  base_url: https://example.org
  site_root: {folder / 'site'}
channels:
  email: {{enabled: false}}
  text: {{enabled: false}}
  wechat:
    app_id: {stub.app_id}
    base_url: {stub.base_url}
    mode: {mode}
    timeout_seconds: {timeout_seconds}
    publish_poll_seconds: 0.01
    publish_wait_seconds: {publish_wait_seconds}
    lease_seconds: {lease_seconds}
    lease_wait_seconds: {lease_wait_seconds}
{fast_retry_and_ledger(folder)}
""", encoding="utf-8")
    return path


def start(settings: Path, issue: Path, stub: WechatStub) -> subprocess.Popen:
    environment = {**os.environ, "WECHAT_APP_SECRET": stub.app_secret}
    return subprocess.Popen([sys.executable, "-m", "distributor", "--settings", str(settings), "publish",
                             str(issue), "--yes", "--channel", "wechat"], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    try:
        out, err = process.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out + err


def drafts_added(stub: WechatStub, title: str) -> int:
    """Count the draft/add requests made for the issue titled `title`."""
    return sum(title in request.body_text for request in stub.requests("draft/add"))


def wait_until(condition: Callable[[], bool], what: str, process: subprocess.Popen,
               timeout: float = PROCESS_TIMEOUT_SECONDS) -> None:
    """Wait for `condition` while `process` runs; fail with its output if it ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended before {what}: {finish(process)}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("mode", ["draft", "publish"])
def test_two_runs_started_together_make_one_draft(tmp_path, mode):
    with WechatStub() as stub:
        stub.slow_down("draft/add", DRAFT_ADD_SECONDS)
        for number in range(TRIES):
            folder = tmp_path / f"try-{number}"
            settings, issue = write_settings(folder, stub, mode), write_issue(folder, number)
            submits_before = len(stub.requests("freepublish/submit"))
            first, second = start(settings, issue, stub), start(settings, issue, stub)
            results = sorted([finish(first), finish(second)])
            title = f"并发测试第 {number} 期"
            assert drafts_added(stub, title) == 1, results
            if mode == "publish":
                assert len(stub.requests("freepublish/submit")) - submits_before == 1, results
            # One run did the steps; the other found them done (0) or said another run held them (3).
            assert results[0][0] == 0 and results[1][0] in (0, 3), results
            assert all("earlier run got no reply" not in output for _, output in results), results


def test_a_run_started_while_another_drives_the_steps_waits_for_its_lease_and_makes_no_draft(tmp_path):
    # The stand-in keeps the first run inside draft/add, holding the lease, until the second run
    # has waited for it and given up: the two overlap for certain, however the processes are scheduled.
    with WechatStub() as stub:
        settings = write_settings(tmp_path, stub, "draft", lease_wait_seconds=1.0,
                                  timeout_seconds=PROCESS_TIMEOUT_SECONDS)
        issue = write_issue(tmp_path, 1)
        stub.hold("draft/add")
        first = start(settings, issue, stub)
        try:
            wait_until(lambda: stub.requests("draft/add"), "the first run asked for its draft", first)
            code, output = finish(start(settings, issue, stub))
            assert first.poll() is None, "the first run should still wait for its draft"
        finally:
            stub.release("draft/add")
        first_code, first_output = finish(first)
        assert code == 3, output
        assert "another run" in output and "holds the lease" in output and "waited 1 s" in output
        assert first_code == 0, first_output
        # Once the first run is done, a run finds its steps recorded and asks for no second draft.
        again, again_output = finish(start(settings, issue, stub))
        assert again == 0, again_output
        assert len(stub.requests("draft/add")) == 1


def test_a_run_that_holds_the_lease_renews_it_and_a_second_run_stops_with_exit_3(tmp_path):
    with WechatStub(publish_polls=10_000) as stub:
        # A lease of 4 s, renewed every third of it (a renewal may come 2 s late and still hold); the
        # first run polls a publish that does not end, past its lease's first expiry.
        settings = write_settings(tmp_path, stub, "publish", lease_seconds=4.0, lease_wait_seconds=0.5,
                                  publish_wait_seconds=PROCESS_TIMEOUT_SECONDS)
        issue = write_issue(tmp_path, 1)
        first = start(settings, issue, stub)
        name = "wechat:/news/race-1/"
        try:
            wait_until(lambda: stub.requests("freepublish/get"), "the first run polled", first)
            first_expiry = lease_of(tmp_path, name)
            assert first_expiry is not None
            wait_until(lambda: time.time() > first_expiry and (lease_of(tmp_path, name) or 0) > time.time(),
                       "its lease renewed past its first expiry", first)
            code, output = finish(start(settings, issue, stub))
            assert first.poll() is None, "the first run should still be polling"
        finally:
            first.kill()
            finish(first)
        assert code == 3, output
        assert "another run" in output and "holds the lease" in output
        assert len(stub.requests("draft/add")) == 1 and len(stub.requests("freepublish/submit")) == 1


def test_the_lease_of_a_killed_run_lapses_and_the_next_run_finishes_its_steps(tmp_path):
    with WechatStub(publish_polls=10_000) as stub:
        settings = write_settings(tmp_path, stub, "publish", lease_seconds=3.0, lease_wait_seconds=20.0,
                                  publish_wait_seconds=30.0)
        issue = write_issue(tmp_path, 1)
        first = start(settings, issue, stub)
        wait_until(lambda: stub.requests("freepublish/get"), "the first run polled", first)
        first.send_signal(signal.SIGKILL)
        finish(first)
        left_behind = lease_of(tmp_path, "wechat:/news/race-1/")
        assert left_behind is not None and left_behind > time.time(), "the killed run's lease should still run"
        stub.publish_polls = 1
        seen = len(stub.requests())
        code, output = finish(start(settings, issue, stub))
        assert code == 0, output
        assert "published: https://mp.weixin.qq.com/s/" in output
        # The next run asked WeChat for nothing before the dead run's lease had lapsed.
        asked = stub.requests()[seen:]
        assert asked and min(request.at for request in asked) >= left_behind
        assert len(stub.requests("draft/add")) == 1 and len(stub.requests("freepublish/submit")) == 1
        assert lease_of(tmp_path, "wechat:/news/race-1/") is None


def lease_of(folder: Path, name: str) -> float | None:
    """Return when the lease on `name` recorded in the ledger under `folder` expires, if one is recorded."""
    db = sqlite3.connect(folder / "ledger.sqlite3")
    try:
        row = db.execute("SELECT expires_at FROM leases WHERE name = ?", (name,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None

"""The channel contract, proved from outside: the pager channel (tests/pager_channel.py) is registered
only here, through an entry point in a dist-info folder as an installed package would be, and
previewed, published, resumed and reported by the unchanged core against a real gateway
(tests/pager_gateway.py) and a real SQLite ledger."""
from __future__ import annotations

import ast
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from distributor import cli, registry
from distributor.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_STOPPED
from distributor.models import Body
from distributor.render.renditions import render_issue
from distributor.settings import Settings

from .conftest import EXAMPLE, ROOT
from .pager_channel import SUMMARY_CHARACTERS, PagerChannel, retry_after_seconds
from .pager_gateway import PagerGateway
from .publish_helpers import configure as configure_email
from .publish_helpers import received_by
from .smtp_server import FaultySmtpServer

ENTRY_POINT = "tests.pager_channel:PagerChannel"
TITLE = "示例周报·11 月 / 第四期 / 2026"
PAGE_URL = "https://example.org/example-weekly-11-4th-2026/"
SUMMARY = "本期看点：Linux 6.18 发布、RISC-V 新板卡、GCC 16 进入第三阶段，以及一个关于 io_uring 的小技巧。"


def write_plugin(folder: Path, entry_point: str = ENTRY_POINT) -> Path:
    """Write the dist-info folder an installed `distributor-pager` package would have; return its parent."""
    dist_info = folder / "distributor_pager-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: distributor-pager\nVersion: 1.0\n",
                                        encoding="utf-8")
    (dist_info / "entry_points.txt").write_text(f"[distributor.channels]\npager = {entry_point}\n", encoding="utf-8")
    return folder


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """Forget the channels found so far, before and after the test, so no other test sees what this one found."""
    registry.channels.cache_clear()
    yield
    registry.channels.cache_clear()


@pytest.fixture
def pager_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: None,
                 unsubscribe_secret: str) -> Path:
    """Register the pager channel for this test only; return the folder that holds its dist-info. The
    secret is set as for any channel with recipients: the core signs their unsubscribe links."""
    site = write_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.fixture(autouse=True)
def signal_handlers() -> Iterator[None]:
    """`publish` installs its Ctrl-C and SIGTERM handlers; put the test process's own back afterwards."""
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


def configure(tmp_path: Path, gateway_url: str, addresses: list[str], *, pager_extra: str = "") -> Path:
    """Write a subscriber file and settings that deliver only the pager channel, with fast retries."""
    subscribers = tmp_path / "pagers.csv"
    subscribers.write_text("email,name\n" + "".join(f"{a},Reader {i}\n" for i, a in enumerate(addresses)),
                           encoding="utf-8")
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"""channels:
  email: {{enabled: false}}
  wechat: {{enabled: false}}
  text: {{enabled: false}}
  pager:
    pagers: {subscribers}
    gateway_url: {gateway_url}
    timeout_seconds: 5
{pager_extra}
retry:
  attempts: 3
  base_delay_seconds: 0.01
  max_delay_seconds: 0.05
  deadline_seconds: 0.5
ledger:
  path: {tmp_path / 'ledger.sqlite3'}
""", encoding="utf-8")
    return settings


def addresses(count: int) -> list[str]:
    return [f"pager{i}@example.org" for i in range(count)]


def ledger_rows(tmp_path: Path) -> dict[str, tuple[str, str | None, str | None]]:
    """Return the pager channel's rows: recipient -> (status, reply, message_id)."""
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    try:
        return {row[0]: row[1:] for row in db.execute(
            "SELECT recipient, status, reply, message_id FROM deliveries WHERE channel = 'pager'")}
    finally:
        db.close()


def status_json(settings: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert cli.main(["--settings", str(settings), "status", str(EXAMPLE), "--json"]) == EXIT_OK
    return json.loads(capsys.readouterr().out)


def publish(settings: Path, *args: str) -> int:
    return cli.main(["--settings", str(settings), "publish", str(EXAMPLE), "--channel", "pager", "--yes", *args])


def test_preview_writes_the_pager_notice(pager_plugin, tmp_path, capsys):
    with PagerGateway() as gateway:
        settings = configure(tmp_path, gateway.url, addresses(1))
        assert cli.main(["--settings", str(settings), "preview", str(EXAMPLE), "--channel", "pager",
                         "--out", str(tmp_path / "one")]) == EXIT_OK
        assert gateway.requests == []           # rendering is pure: the gateway never hears of a preview
    assert [path.name for path in (tmp_path / "one").iterdir()] == ["pager.txt"]
    notice = (tmp_path / "one" / "pager.txt").read_text(encoding="utf-8")
    assert notice.splitlines() == [TITLE, SUMMARY, PAGE_URL]
    assert any(line.split()[:1] == ["pager"] and "KB" in line for line in capsys.readouterr().out.splitlines())

    assert cli.main(["--settings", str(settings), "preview", str(EXAMPLE), "--channel", "all",
                     "--out", str(tmp_path / "all")]) == EXIT_OK
    assert sorted(path.name for path in (tmp_path / "all").iterdir()) == \
        ["email.eml", "email.html", "pager.txt", "text.txt", "wechat.html"]


def test_a_long_summary_is_cut_and_a_missing_page_url_is_a_warning(pager_plugin):
    issue = render_issue(EXAMPLE, Settings(), ()).issue
    notice = PagerChannel().render(issue, Body(html="<p>x</p>", summary="长" * 400, page_url=None), Settings())
    assert notice.text == f"{TITLE}\n{'长' * (SUMMARY_CHARACTERS - 1)}…\n" and notice.links == ()
    assert notice.warnings == (f"pager: the summary is cut to {SUMMARY_CHARACTERS} characters",
                               "pager: the issue has no page URL, so the notice links nowhere")


def test_publish_pages_every_subscriber_once(pager_plugin, tmp_path, capsys):
    readers = addresses(7)
    with PagerGateway() as gateway:
        settings = configure(tmp_path, gateway.url, readers)
        assert publish(settings) == EXIT_OK
        assert gateway.paged() == {address: 1 for address in readers}
        assert gateway.requests[0] == ("GET", "/health")
        rows = ledger_rows(tmp_path)
        by_address = {page.to: page for page in gateway.pages}
        for address in readers:
            status, reply, message_id = rows[address]
            assert status == "sent" and message_id == by_address[address].id and reply == f"accepted {message_id}"
        assert {page.text for page in gateway.pages} == {f"{TITLE}\n{SUMMARY}\n{PAGE_URL}\n"}

        assert publish(settings) == EXIT_OK       # nothing left to page: nobody gets a second one
        assert gateway.paged() == {address: 1 for address in readers}
    assert status_json(settings, capsys)["counts"] == {"pager": {"sent": 7}}


def test_a_gateway_down_part_way_stops_the_run_and_the_next_one_pages_the_rest(pager_plugin, tmp_path, capsys):
    readers = addresses(9)
    with PagerGateway(down_after=3) as gateway:
        settings = configure(tmp_path, gateway.url, readers)
        assert publish(settings) == EXIT_STOPPED
        assert len(gateway.pages) == 3 and set(gateway.paged().values()) == {1}
        assert gateway.refused >= 1
        assert status_json(settings, capsys)["counts"] == {"pager": {"sent": 3, "pending": 6}}

        # Still down: the health check stops the run before any page is tried.
        requests_before = len(gateway.requests)
        assert publish(settings) == EXIT_STOPPED
        assert gateway.requests[requests_before:] == [("GET", "/health")]

        gateway.recover()
        assert publish(settings) == EXIT_OK
        assert gateway.paged() == {address: 1 for address in readers}

    capsys.readouterr()
    assert cli.main(["--settings", str(settings), "status", str(EXAMPLE)]) == EXIT_OK
    assert "  pager: 9 sent, 0 failed, 0 uncertain, 0 pending" in capsys.readouterr().out.splitlines()
    report = status_json(settings, capsys)
    assert report["counts"] == {"pager": {"sent": 9}} and report["problems"] == []


def test_a_refused_pager_fails_alone_and_status_names_it(pager_plugin, tmp_path, capsys):
    readers = addresses(4)
    with PagerGateway(unknown=frozenset({readers[1]})) as gateway:
        settings = configure(tmp_path, gateway.url, readers)
        assert publish(settings) == EXIT_FAILED
        assert gateway.paged() == {address: 1 for address in readers if address != readers[1]}
    report = status_json(settings, capsys)
    assert report["counts"] == {"pager": {"sent": 3, "failed": 1}}
    (problem,) = report["problems"]
    assert (problem["channel"], problem["recipient"], problem["state"], problem["attempts"], problem["reply"]) == \
        ("pager", readers[1], "failed", 1, f"404 no pager {readers[1]}")


def test_an_unreachable_gateway_stops_the_run_with_every_row_pending(pager_plugin, tmp_path, capsys):
    with PagerGateway() as gateway:
        closed = gateway.url                 # nothing listens there once the gateway is gone
    settings = configure(tmp_path, closed, addresses(3))
    assert publish(settings) == EXIT_STOPPED
    assert {status for status, _, _ in ledger_rows(tmp_path).values()} == {"pending"}
    assert status_json(settings, capsys)["counts"] == {"pager": {"pending": 3}}


def test_dry_run_shows_the_sinks_pages_and_sends_nothing(pager_plugin, tmp_path):
    readers = addresses(7)
    with PagerGateway() as gateway:
        settings = configure(tmp_path, gateway.url, readers)
        result = run_distributor(pager_plugin, settings, "publish", str(EXAMPLE), "--channel", "pager", "--dry-run")
        assert result.returncode == EXIT_OK, result.stderr
        assert gateway.requests == []
    lines = result.stdout.splitlines()
    assert [line for line in lines if "would page" in line] == \
        [f"  would page {address}: {TITLE}" for address in readers[:5]]
    assert "  … and 2 more pages" in lines
    assert "  pager: 7 recipients" in result.stdout
    assert not (tmp_path / "ledger.sqlite3").exists()


def test_a_fresh_process_finds_the_entry_point_and_publishes(pager_plugin, tmp_path):
    readers = addresses(5)
    with PagerGateway() as gateway:
        settings = configure(tmp_path, gateway.url, readers)
        result = run_distributor(pager_plugin, settings, "publish", str(EXAMPLE), "--channel", "pager", "--yes")
        assert result.returncode == EXIT_OK, result.stderr
        assert gateway.paged() == {address: 1 for address in readers}
    assert "pager: 5 sent, 0 failed, 0 uncertain" in result.stdout
    # Without the dist-info folder on the path, a process knows no pager channel.
    result = run_distributor(None, settings, "publish", str(EXAMPLE), "--channel", "pager", "--yes")
    assert result.returncode == EXIT_BAD_INPUT and "invalid choice: 'pager'" in result.stderr
    result = run_distributor(None, settings, "preview", str(EXAMPLE), "--out", str(tmp_path / "out"))
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.splitlines() == [f"distributor: error: {settings}: unknown key channels.pager"]


def run_distributor(site: Path | None, settings: Path, *args: str) -> subprocess.CompletedProcess:
    """Run `python -m distributor` in a process of its own, the plug-in's folder (if any) on its path."""
    environment = {key: value for key, value in os.environ.items() if key != "DISTRIBUTOR_SETTINGS"}
    environment["PYTHONPATH"] = os.pathsep.join([*([str(site)] if site else []), str(ROOT)])
    return subprocess.run([sys.executable, "-m", "distributor", "--settings", str(settings), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=environment)


@pytest.mark.parametrize("setting, expected", [
    ("    gateway_url: file:///x", "channels.pager.gateway_url: 'file:///x' is not an http:// or https:// URL"),
    ("    timeout_seconds: 0", "channels.pager.timeout_seconds must be between 0.01 and 300, not 0"),
    ("    pages: 3", "unknown key channels.pager.pages"),
])
def test_bad_pager_settings_are_refused_naming_the_key(pager_plugin, tmp_path, capsys, setting, expected):
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"channels:\n  pager:\n{setting}\n", encoding="utf-8")
    assert cli.main(["--settings", str(settings), "preview", str(EXAMPLE), "--out", str(tmp_path / "out")]) \
        == EXIT_BAD_INPUT
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"distributor: error: {settings}: {expected}"
    assert not (tmp_path / "out").exists()


def test_without_the_plugin_channels_pager_is_an_unknown_key(fresh_registry, tmp_path, capsys):
    settings = tmp_path / "settings.yaml"
    settings.write_text("channels:\n  pager:\n    gateway_url: http://127.0.0.1:9/\n", encoding="utf-8")
    assert "pager" not in registry.names()
    assert cli.main(["--settings", str(settings), "preview", str(EXAMPLE), "--out", str(tmp_path / "out")]) \
        == EXIT_BAD_INPUT
    assert capsys.readouterr().err.splitlines() == [f"distributor: error: {settings}: unknown key channels.pager"]


def test_a_broken_entry_point_is_one_line_naming_it(tmp_path, monkeypatch, fresh_registry, capsys):
    monkeypatch.syspath_prepend(str(write_plugin(tmp_path / "site", "tests.no_such_pager:PagerChannel")))
    assert cli.main(["preview", str(EXAMPLE), "--out", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("distributor: error: entry point pager = tests.no_such_pager:PagerChannel "
                           "(group distributor.channels, package distributor-pager): cannot be loaded: "
                           "ModuleNotFoundError")
    assert not (tmp_path / "out").exists()


def test_the_plugin_uses_only_the_contract_and_public_helpers():
    tree = ast.parse((Path(__file__).parent / "pager_channel.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module} | \
        {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    ours = {name for name in imported if name.split(".")[0] == "distributor"}
    public = {"distributor.channel", "distributor.errors", "distributor.models", "distributor.settings"}
    assert ours and all(name in public or name.startswith("distributor.validate.") for name in ours), ours
    assert not any(node.level for node in ast.walk(tree) if isinstance(node, ast.ImportFrom))


def test_retry_after_is_read_as_seconds_or_a_date():
    import datetime as dt
    now = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.timezone.utc)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds("Fri, 27 Nov 2026 08:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Fri, 27 Nov 2026 07:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None


def test_without_the_secret_a_real_publish_is_refused_for_a_channel_with_recipients(pager_plugin, tmp_path,
                                                                                     monkeypatch, capsys):
    monkeypatch.delenv("DISTRIBUTOR_UNSUBSCRIBE_SECRET")
    with PagerGateway() as gateway:
        settings = configure(tmp_path, gateway.url, addresses(2))
        assert publish(settings) == EXIT_BAD_INPUT
        assert gateway.pages == []
    assert "set the environment variable DISTRIBUTOR_UNSUBSCRIBE_SECRET" in capsys.readouterr().err


def test_a_stopped_transport_group_stops_only_its_own_channels_and_caps_count_only_its_own(pager_plugin,
                                                                                          tmp_path):
    # Earlier pages do not count against the relay's hourly cap, and the pager gateway being down (its
    # channel runs first here) does not keep the email channel from sending.
    mail = ["m1@example.org", "m2@example.org", "m3@example.org"]
    with PagerGateway() as gateway:
        settings = configure(tmp_path, gateway.url, addresses(5))
        assert publish(settings) == EXIT_OK and len(gateway.pages) == 5
    with FaultySmtpServer() as server:
        settings = configure_email(tmp_path, server, mail, smtp_extra="  hourly_cap: 3")
        pagers = tmp_path / "pagers.csv"
        pagers.write_text("email\n" + "".join(f"{address}\n" for address in addresses(7)), encoding="utf-8")
        settings.write_text(settings.read_text(encoding="utf-8").replace(
            "  text: {enabled: false}\n",
            f"  text: {{enabled: false}}\n  pager:\n    pagers: {pagers}\n    gateway_url: http://127.0.0.1:9/\n"),
            encoding="utf-8")
        status = cli.main(["--settings", str(settings), "publish", str(EXAMPLE), "--yes",
                           "--channel", "pager", "--channel", "email"])
        assert received_by(server) == {address: 1 for address in mail}
    assert status == EXIT_STOPPED               # the pager's gateway is unreachable: a later run resumes it
    assert sorted(status for status, _, _ in ledger_rows(tmp_path).values()) == ["pending"] * 2 + ["sent"] * 5


def test_check_reaches_the_pager_gateway_as_it_does_the_relay(pager_plugin, tmp_path, capsys):
    with PagerGateway() as gateway:
        settings = configure(tmp_path, gateway.url, addresses(1))
        assert cli.main(["--settings", str(settings), "check"]) == EXIT_OK
        assert capsys.readouterr().out.splitlines() == [f"pager: gateway {gateway.url} is healthy"]
        assert gateway.requests == [("GET", "/health")] and gateway.pages == []
    settings = configure(tmp_path, "http://127.0.0.1:9/", addresses(1))
    assert cli.main(["--settings", str(settings), "check"]) == EXIT_FAILED
    assert capsys.readouterr().out.startswith("pager: pager gateway http://127.0.0.1:9/ cannot be reached")

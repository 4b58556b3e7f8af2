"""The command line as a user runs it: a real process, real files, exit statuses and stderr."""
from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys

import pytest

from .conftest import EXAMPLE, ROOT


def run(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    environment.pop("DISTRIBUTOR_SETTINGS", None)
    return subprocess.run([sys.executable, "-m", "distributor", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=environment, timeout=120)


def test_preview_writes_every_rendition_and_summarises(tmp_path):
    result = run("preview", str(EXAMPLE), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == ["email.eml", "email.html", "text.txt", "wechat.html"]
    for channel in ("email", "wechat", "text"):
        assert any(line.strip().startswith(channel) and "KB" in line for line in result.stdout.splitlines())
    message = email.message_from_bytes((tmp_path / "out" / "email.eml").read_bytes(), policy=email.policy.default)
    assert message["Subject"].startswith("示例周报")


def test_preview_one_channel(tmp_path):
    result = run("preview", str(EXAMPLE), "--channel", "text", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["text.txt"]


def test_dry_run_sends_nothing_and_writes_no_ledger(tmp_path):
    settings = tmp_path / "settings.yaml"
    subscribers = tmp_path / "subscribers.csv"
    subscribers.write_text("email,name\na@example.org,A\nb@example.org,B\n", encoding="utf-8")
    ledger = tmp_path / "ledger.sqlite3"
    settings.write_text(f"channels:\n  email:\n    subscribers: {subscribers}\n"
                        f"ledger:\n  path: {ledger}\nsmtp:\n  host: 127.0.0.1\n  port: 9\n", encoding="utf-8")
    result = run("--settings", str(settings), "publish", str(EXAMPLE), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "email" in result.stdout and "2 recipients" in result.stdout
    assert "示例周报" in result.stdout
    assert not ledger.exists()


@pytest.mark.parametrize("setup, expected", [
    (lambda d: ("preview", str(d / "missing.md")), "cannot read issue"),
    (lambda d: ("preview", _write(d / "no-title.md", "---\nauthor: x\n---\nbody\n")), "no title"),
    (lambda d: ("preview", _write(d / "bad-yaml.md", "---\ntitle: [x\n---\nbody\n")),
     "bad-yaml.md:2: invalid front matter"),
    (lambda d: ("preview", _write(d / "empty.md", "---\ntitle: T\n---\n")), "no body"),
    (lambda d: ("preview", _write(d / "plain.md", "no header here\n")), "no front matter"),
    (lambda d: ("--settings", _write(d / "s.yaml", "channels:\n  email:\n    port: 25\n"), "preview", str(EXAMPLE)),
     "unknown key channels.email.port"),
    (lambda d: ("--settings", _write(d / "s.yaml", "smtp:\n  port: twenty\n"), "preview", str(EXAMPLE)),
     "smtp.port must be int"),
    (lambda d: ("--settings", _write(d / "s.yaml", "smtp:\n  port: 25\n   host: x\n"), "preview", str(EXAMPLE)),
     "s.yaml:3: invalid YAML"),
])
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, setup, expected):
    out = tmp_path / "out"
    result = run(*setup(tmp_path), "--out", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()


def _write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)

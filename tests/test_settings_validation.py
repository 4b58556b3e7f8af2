"""A settings file is validated whole when it is loaded: each bad value, run through the real CLI as a
dry run, exits 2 with one line naming its key, before anything else happens. A settings file that is
not a regular file, too large, or YAML with aliases or deep nesting is refused quickly (a subprocess
with a time and memory bound, as the unbounded reader would read /dev/zero for ever)."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EXAMPLE, ROOT


def run_dry(settings: Path, seconds: float = 30) -> subprocess.CompletedProcess:
    """`distributor --settings FILE publish EXAMPLE --dry-run` with at most 1 GB of memory and `seconds`."""
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 ** 30, 2 ** 30))
    environment = {key: value for key, value in os.environ.items() if key != "DISTRIBUTOR_SETTINGS"}
    return subprocess.run([sys.executable, "-m", "distributor", "--settings", str(settings), "publish", str(EXAMPLE),
                           "--dry-run"], capture_output=True, text=True, timeout=seconds, cwd=ROOT, env=environment,
                          preexec_fn=limit_memory)


# (settings YAML, the start of the message after "FILE: ")
VALUE_CASES = {
    "NaN SMTP timeout": ("smtp:\n  timeout_seconds: .nan\n", "smtp.timeout_seconds must be a finite number, not nan"),
    "NaN rate": ("smtp:\n  per_second: .nan\n", "smtp.per_second must be a finite number"),
    "infinite rate": ("smtp:\n  per_second: .inf\n", "smtp.per_second must be a finite number, not inf"),
    "NaN retry deadline": ("retry:\n  deadline_seconds: .NaN\n", "retry.deadline_seconds must be a finite number"),
    "NaN base delay": ("retry:\n  base_delay_seconds: .nan\n", "retry.base_delay_seconds must be a finite number"),
    "NaN max delay": ("retry:\n  max_delay_seconds: .nan\n", "retry.max_delay_seconds must be a finite number"),
    "NaN WeChat timeout": ("channels:\n  wechat:\n    timeout_seconds: .nan\n",
                           "channels.wechat.timeout_seconds must be a finite number"),
    "NaN publish poll": ("channels:\n  wechat:\n    publish_poll_seconds: .nan\n",
                         "channels.wechat.publish_poll_seconds must be a finite number"),
    "infinite publish wait": ("channels:\n  wechat:\n    publish_wait_seconds: .inf\n",
                              "channels.wechat.publish_wait_seconds must be a finite number"),
    "NaN max lateness": ("schedule:\n  max_lateness_seconds: .nan\n",
                         "schedule.max_lateness_seconds must be a finite number"),
    "NaN lease": ("schedule:\n  lease_seconds: .nan\n", "schedule.lease_seconds must be a finite number"),
    "minus infinite poll": ("schedule:\n  poll_seconds: -.inf\n", "schedule.poll_seconds must be a finite number"),
    "an integer too large for a float": ("smtp:\n  timeout_seconds: 1" + "0" * 400 + "\n",
                                         "smtp.timeout_seconds must be a finite number"),
    "javascript: base_url": ("site:\n  base_url: 'javascript:alert(1)'\n",
                             "site.base_url: 'javascript:alert(1)' is not an http:// or https:// URL"),
    "base_url that is no URL": ("site:\n  base_url: example.org\n", "site.base_url: 'example.org' is not an http"),
    "base_url without a host": ("site:\n  base_url: 'https:///path'\n", "site.base_url: 'https:///path' has no host"),
    "base_url with a space": ("site:\n  base_url: https://example.org/a b\n",
                              "site.base_url: 'https://example.org/a b'"),
    "WeChat base_url not http": ("channels:\n  wechat:\n    base_url: 'file:///etc/passwd'\n",
                                 "channels.wechat.base_url: 'file:///etc/passwd' is not an http"),
    "unsubscribe_url not http": ("channels:\n  email:\n    unsubscribe_url: 'javascript:{token}'\n",
                                 "channels.email.unsubscribe_url: 'javascript:{token}' is not an http"),
    "unsubscribe_url without a host": ("channels:\n  email:\n    unsubscribe_url: 'https://{token}'\n",
                                       "channels.email.unsubscribe_url: 'https://{token}' has an invalid host"),
    "unsubscribe_url without {token}": ("channels:\n  email:\n    unsubscribe_url: https://example.org/u\n",
                                        "channels.email.unsubscribe_url: must hold {token}"),
    "from_address that is no address": ("channels:\n  email:\n    from_address: newsletter\n",
                                        "channels.email.from_address: invalid address 'newsletter'"),
    "from_address with a display name": ("channels:\n  email:\n    from_address: News <news@example.org>\n",
                                         "channels.email.from_address: invalid address 'News <news@example.org>'"),
    "template_dir that does not exist": ("channels:\n  email:\n    template_dir: /nonexistent/templates\n",
                                         "channels.email.template_dir: no such folder '/nonexistent/templates'"),
    "site_root that does not exist": ("site:\n  site_root: /nonexistent/site\n",
                                      "site.site_root: no such folder '/nonexistent/site'"),
    "smtp.host with a space": ("smtp:\n  host: relay example.org\n", "smtp.host: invalid host name"),
    "CR LF in smtp.ehlo_name": ('smtp:\n  ehlo_name: "mail.example.org\\r\\nMAIL FROM:<x@evil.example>"\n',
                                "smtp.ehlo_name: holds a control character"),
    "an IP address for smtp.ehlo_name": ("smtp:\n  ehlo_name: 192.0.2.1\n",
                                         "smtp.ehlo_name: write an IP address in brackets, as [192.0.2.1]"),
    "an environment variable name with a space": ("smtp:\n  password_env: SMTP PASSWORD\n",
                                                  "smtp.password_env: 'SMTP PASSWORD' is not an environment variable"),
    "an unknown time zone": ("schedule:\n  timezone: Mars/Olympus_Mons\n",
                             "schedule.timezone: unknown time zone 'Mars/Olympus_Mons'"),
    "a time zone that is a path": ("schedule:\n  timezone: ../../../etc/passwd\n",
                                   "schedule.timezone: unknown time zone '../../../etc/passwd'"),
    "a language that is no language tag": ("site:\n  language: 'zh\"><script>'\n",
                                           "site.language: 'zh\"><script>' is not a language tag"),
    "a section that is not a mapping": ("site: [a, b]\n", "site: expected a mapping"),
    "a NUL byte in the ledger path": ('ledger:\n  path: "/tmp/a\\0b"\n', "ledger.path: holds a control character"),
    "lists that are not a list": ("channels:\n  email:\n    lists: weekly\n",
                                  "channels.email.lists must be a list of at most 100 items"),
    "a list name with a capital": ("channels:\n  email:\n    lists: [weekly, Weekly]\n",
                                   "channels.email.lists[1]: 'Weekly' is not a list name"),
    "a list named twice": ("channels:\n  text:\n    lists: [weekly, weekly]\n",
                           "channels.text.lists names an item twice"),
    "a list name that is a number": ("channels:\n  email:\n    lists: [2024]\n",
                                     "channels.email.lists[0] must be str, not int"),
    "signup.public_url without a final slash": ("signup:\n  public_url: https://example.org/news\n",
                                                "signup.public_url: must end with /"),
    "a trusted proxy that is no address": ("signup:\n  trusted_proxies: [proxy.example.org]\n",
                                           "signup.trusted_proxies[0]: 'proxy.example.org' is not an IP address"),
    "an unknown client_address choice": ("signup:\n  client_address: partial\n",
                                         "signup.client_address must be one of hash, full, none"),
}


@pytest.mark.parametrize("name", VALUE_CASES)
def test_a_bad_value_exits_2_with_one_line_naming_its_key(tmp_path: Path, name: str) -> None:
    text, expected = VALUE_CASES[name]
    settings = tmp_path / "settings.yaml"
    settings.write_text(text, encoding="utf-8")
    result = run_dry(settings)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"distributor: error: {settings}: {expected}"), line
    assert result.stdout == ""


def test_the_example_settings_and_good_values_still_load(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"""site:
  base_url: http://127.0.0.1:4000/blog/
  site_root: {tmp_path}
  language: zh-Hans-CN
channels:
  email:
    from_address: o'brien+news@mail.example.xn--fiqs8s
    reply_to: 编辑部 <editors@example.org>
    template_dir: {tmp_path / 'templates'}
    unsubscribe_url: https://[::1]:8443/u/{{token}}?list=weekly
  wechat:
    enabled: false                  # site_root holds none of the example's images, which a dry run reads
    base_url: http://localhost:8080/
smtp:
  host: ::1
  ehlo_name: "[IPv6:2001:db8::1]"
  timeout_seconds: 7
""", encoding="utf-8")
    result = run_dry(settings)
    assert "distributor: error" not in result.stderr, result.stderr
    assert run_dry(ROOT / "settings.example.yaml").stderr.count("distributor: error") == 0


def alias_bomb() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


FILE_CASES = {
    "/dev/zero": (lambda d: Path("/dev/zero"), "/dev/zero: settings file is not a regular file"),
    "a FIFO": (lambda d: _fifo(d / "settings.fifo"), "settings.fifo: settings file is not a regular file"),
    "a 2 MB file": (lambda d: _write(d / "big.yaml", "# padding\n" * 200_000),
                    "big.yaml: settings file is larger than 1,048,576 bytes"),
    "an alias bomb": (lambda d: _write(d / "bomb.yaml", alias_bomb()), "bomb.yaml:2: invalid YAML: aliases (*a0)"),
    "nesting 10,000 deep": (lambda d: _write(d / "deep.yaml", "site: " + "[" * 10_000 + "]" * 10_000 + "\n"),
                            "deep.yaml:1: invalid YAML: nested deeper than 20 levels"),
    "a date that does not exist": (lambda d: _write(d / "date.yaml", "site:\n  name: 2024-02-30\n"),
                                   "date.yaml:2: invalid YAML: date '2024-02-30' is not valid"),
}


@pytest.mark.parametrize("name", FILE_CASES)
def test_an_unusable_settings_file_is_refused_quickly_in_one_line(tmp_path: Path, name: str) -> None:
    make, expected = FILE_CASES[name]
    result = run_dry(make(tmp_path), seconds=20)
    assert result.returncode == 2, result.stdout + result.stderr[-2000:]
    (line,) = result.stderr.splitlines()
    assert line.startswith("distributor: error: ") and expected in line, line


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path

"""Issue files an attacker (or an accident) could write: each is previewed by the real CLI in a
subprocess with a time bound, and must end in exit 0, or exit 2 with one line: never a traceback,
never a hang. A property test then throws generated Markdown at load-and-render."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from distributor.errors import InputError
from distributor.render.renditions import render_issue
from distributor.settings import load_settings

from .conftest import ROOT

SIZE = 100_000
SECONDS = 20          # each of these took 90 s or more, or a traceback, before the bounds
HEADER = "---\ntitle: T\n---\n"


def repeated(unit: str, size: int = SIZE) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def preview(tmp_path: Path, text: str | bytes, name: str = "issue.md") -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return subprocess.run([sys.executable, "-m", "distributor", "preview", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=SECONDS, cwd=ROOT)


def assert_clean_end(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode in (0, 2), result.stderr[-2000:]
    if result.returncode == 2:
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("distributor: error: ")


@pytest.mark.parametrize("unit", ["[", "![", "[a](", "<a ", "<a\n", ":", ":\n", "a\n: b\n", "{{", "{%", "[^", "*[",
                                  "[a][", "]", "\\[", "<http", "```a\n", "<!--\n\n", "<div>\n\n", "<pre>\n\n",
                                  "[](", "1. ", "> ", "- [", "|[", "&#", "`", "中[文"])
def test_pathological_body_ends_in_time(tmp_path, unit):
    assert_clean_end(preview(tmp_path, HEADER + repeated(unit) + "\n"))


@pytest.mark.parametrize("body, line", [
    ("".join("  " * depth + "- x\n" for depth in range(1000)), 4 + 50),   # the 51st item opens level 51
    ("> " * 1000 + "x\n", 4),
    ("1. " * 1000 + "x\n", 4),
])
def test_markdown_nested_past_the_bound_is_refused_with_its_line(tmp_path, body, line):
    result = preview(tmp_path, HEADER + body)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr[-2000:]
    assert f"issue.md:{line}: lists or quotes nested deeper than 50 levels" in result.stderr


def test_an_issue_over_two_megabytes_is_refused_before_it_is_read(tmp_path):
    result = preview(tmp_path, HEADER + "x" * (2 * 1024 * 1024) + "\n")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "issue is larger than 2,097,152 bytes" in result.stderr


@pytest.mark.parametrize("front_matter, line, message", [
    ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b]\n", 4,
     "aliases (*a) are not allowed"),
    ("a: *undefined\n", 3, "aliases (*undefined) are not allowed"),
    ("x: " + "[" * 1000 + "]" * 1000 + "\n", 3, "nested deeper than 10 levels"),
    ("date: 2024-02-30\n", 3, "date '2024-02-30' is not valid"),
    ("date: '2024-13-01'\n", 3, "is not a valid date"),
    ("n: " + "9" * 5000 + "\n", 3, "is not valid"),
])
def test_hostile_front_matter_is_refused_with_its_line(tmp_path, front_matter, line, message):
    result = preview(tmp_path, f"---\ntitle: T\n{front_matter}---\nbody\n")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr[-2000:]
    assert f"issue.md:{line}:" in result.stderr and message in result.stderr


def test_front_matter_over_its_bound_is_refused_before_it_is_parsed(tmp_path):
    fields = "".join(f"k{number}: v\n" for number in range(150_000))
    result = preview(tmp_path, f"---\ntitle: T\n{fields}---\nbody\n")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "issue.md:1: the front matter is over 64 KB" in result.stderr


def test_an_impossible_date_in_the_file_name_is_refused(tmp_path):
    result = preview(tmp_path, HEADER + "body\n", name="2024-02-30-weekly.md")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "2024-02-30-weekly.md:" in result.stderr and "does not exist" in result.stderr


# --- load and render, for generated Markdown --------------------------------------------------------

DANGEROUS = "[]()<>!*_#>-: {}%`\\|&^~\"'=/中文，。"
LINES = st.lists(st.tuples(st.sampled_from(["", " ", "  ", "    ", "\t", "> ", "- ", "1. "]),
                           st.text(alphabet=DANGEROUS + "ab", max_size=40)), max_size=30)
FIELDS = st.lists(st.tuples(st.sampled_from(["title", "date", "tags", "draft", "permalink", "author", "cover", "x"]),
                            st.text(alphabet=DANGEROUS + "0123456789ab\n", max_size=20)), max_size=4)
NESTING = st.tuples(st.sampled_from(["> ", "- ", "1. ", "* > "]), st.integers(min_value=0, max_value=400))


@hypothesis_settings(max_examples=200, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fields=FIELDS, lines=LINES, nesting=NESTING)
def test_generated_markdown_renders_or_is_refused(tmp_path, fields, lines, nesting):
    """Load and render for all three channels either works or raises InputError: nothing else."""
    marker, depth = nesting
    body = marker * depth + "x\n" + "\n".join(indent + text for indent, text in lines) + "\nend\n"
    front = "".join(f"{key}: {value}\n" for key, value in fields)
    path = tmp_path / "generated.md"
    for text in (f"---\ntitle: T\n---\n{body}", f"---\n{front}---\n{body}", f"# T\n\n{body}"):
        path.write_text(text, encoding="utf-8")
        try:
            renditions = render_issue(path, load_settings(None))
        except InputError:
            continue
        assert renditions["email"] is not None and renditions["wechat"] is not None and renditions["text"] is not None

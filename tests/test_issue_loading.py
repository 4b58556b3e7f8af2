"""Loading issue files: header shapes, tolerated quirks, the issue key, and every bad input."""
from __future__ import annotations

import datetime as dt

import pytest

from distributor.errors import InputError
from distributor.render.issue import load_issue
from distributor.settings import SiteSettings

SITE = SiteSettings(base_url="https://example.org")


def write(tmp_path, name: str, data: bytes | str):
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def test_jekyll_front_matter_with_bom_crlf_and_tab_after_value(tmp_path):
    source = ("\ufeff---\r\ntitle: 泰晓资讯·测试\r\nauthor: 'someone'\r\ntags:\r\n  - Linux\t\r\n"
              "  - GCC \r\npermalink: /weekly-1/\r\nlayout: weekly\r\n---\r\n\r\n正文第一段。\r\n")
    issue = load_issue(write(tmp_path, "2019-08-02-13-54-26-weekly-1.md", source), SITE)
    assert issue.title == "泰晓资讯·测试"
    assert issue.tags == ("Linux", "GCC")
    assert issue.key == "/weekly-1/"
    assert issue.date == dt.datetime(2019, 8, 2, 13, 54, 26)
    assert issue.extra == {"layout": "weekly"}
    assert "\r" not in issue.body_markdown and issue.body_markdown.strip() == "正文第一段。"
    assert len(issue.content_hash) == 64


@pytest.mark.parametrize("name, key, date", [
    ("2024-03-13-this-week-in-rust.md", "2024-03-13-this-week-in-rust", dt.datetime(2024, 3, 13)),
    ("2019-10-11-11-05-36-tinylab-weekly-10-1st-2019.md", "2019-10-11-11-05-36-tinylab-weekly-10-1st-2019",
     dt.datetime(2019, 10, 11, 11, 5, 36)),
    ("weekly.md", "weekly", None),
])
def test_key_is_the_whole_file_stem_with_its_date(tmp_path, name, key, date):
    issue = load_issue(write(tmp_path, name, "---\ntitle: T\n---\nbody\n"), SITE)
    assert (issue.key, issue.date) == (key, date)


def test_front_matter_date_wins_over_file_name(tmp_path):
    issue = load_issue(write(tmp_path, "2020-01-01-x.md", "---\ntitle: T\ndate: 2021-02-03 04:05\n---\nb\n"), SITE)
    assert issue.date == dt.datetime(2021, 2, 3, 4, 5)


def test_pelican_header(tmp_path):
    source = "Title: This Week In Rust 1\nDate: 2013-06-07 18:46\nTags: rust, programming\n\nHello.\n"
    issue = load_issue(write(tmp_path, "2013-06-07-this-week-in-rust.markdown", source), SITE)
    assert issue.title == "This Week In Rust 1"
    assert issue.date == dt.datetime(2013, 6, 7, 18, 46)
    assert issue.tags == ("rust", "programming")
    assert issue.body_markdown.strip() == "Hello."


def test_title_from_first_heading_without_front_matter(tmp_path):
    source = "# Python Trending Weekly #17 (2023-08-26)\n\nWelcome.\n\n## Articles\n"
    issue = load_issue(write(tmp_path, "2023-08-26-weekly.md", source), SITE)
    assert issue.title == "Python Trending Weekly #17 (2023-08-26)"
    assert issue.body_markdown.lstrip().startswith("Welcome.")


def test_liquid_resolved_or_reported_with_line(tmp_path):
    source = ("---\ntitle: T\n---\nSee {{ site.url }}/x and {% raw %}{{ kept }}{% endraw %}.\n\n"
              "{% include note.html %}\n")
    issue = load_issue(write(tmp_path, "a.md", source), SITE)
    assert "https://example.org/x" in issue.body_markdown
    assert "{{ kept }}" in issue.body_markdown and "{% raw %}" not in issue.body_markdown
    assert len(issue.warnings) == 1
    assert "a.md:6:" in issue.warnings[0] and "include note.html" in issue.warnings[0]


@pytest.mark.parametrize("source, message, line", [
    ("Just a body, no header.\n", "no front matter and no '# ' title", 1),
    ("---\ntitle: [unclosed\n---\nbody\n", "invalid front matter", 2),
    ("---\ntitle: a\n  b: c\n---\nbody\n", "invalid front matter", 3),
    ("---\nauthor: someone\n---\nbody\n", "no title", 1),
    ("---\ntitle: T\n---\n\n   \n", "no body", 4),
    ("---\ntitle: T\nbody without end\n", "never closed", 1),
    ("---\n- a list\n---\nbody\n", "must be a mapping", 2),
    (b"---\ntitle: T\n---\n\xff\xfe bad\n", "not valid UTF-8", 4),
    # Front matter of the wrong type, or with a control character in a field that becomes a header.
    ("---\ntitle: [a, b]\n---\nbody\n", "title must be text, not a list", 2),
    ("---\ntitle: T\npermalink: [a, b]\n---\nbody\n", "permalink must be text, not a list", 3),
    ("---\ntitle: T\nauthor: {name: x}\n---\nbody\n", "author must be text, not a mapping", 3),
    ("---\ntitle: 2024\n---\nbody\n", "title must be text, not the int '2024'", 2),
    ("---\ntitle: T\ntags: [1, 2]\n---\nbody\n", "tags must be a string or a list of strings", 3),
    ("---\ntitle: T\ndraft: maybe\n---\nbody\n", "draft must be true or false", 3),
    ("---\ntitle: T\ndate: [2024]\n---\nbody\n", "date must be a date, not a list", 3),
    ("---\ntitle: T\n\ndate: 2024-02-30\n---\nbody\n", "date '2024-02-30' is not valid", 4),
    ("---\ntitle: \"a\\r\\nBcc: victim@evil.example\"\n---\nbody\n", "control character U+000D", 2),
    ("---\ntitle: T\nauthor: |\n  two\n  lines\n---\nbody\n", "author contains the control character U+000A", 3),
    ("Title: a\x07b\nDate: 2013-06-07\n\nHello.\n", "title contains the control character U+0007", 1),
    ("---\ntitle: T\ncover: \"/a.png\\u2028x\"\n---\nbody\n", "control character U+2028", 3),
])
def test_bad_input_names_file_and_line(tmp_path, source, message, line):
    path = write(tmp_path, "bad.md", source)
    with pytest.raises(InputError) as caught:
        load_issue(path, SITE)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{path}:{line}:")


def test_unreadable_file(tmp_path):
    with pytest.raises(InputError, match="cannot read issue"):
        load_issue(tmp_path / "missing.md", SITE)


def test_a_description_may_fold_over_lines_but_holds_no_other_control_character(tmp_path):
    source = "---\ntitle: T\ndescription: |\n  one\n  two\ndraft: false\n---\nbody\n"
    assert load_issue(write(tmp_path, "a.md", source), SITE).description == "one\ntwo"
    with pytest.raises(InputError, match="U\\+001B"):
        load_issue(write(tmp_path, "c.md", "---\ntitle: T\ndescription: \"a\\x1bb\"\n---\nbody\n"), SITE)
    pelican = "Title: T\nDraft: true\n\nHello.\n"
    assert load_issue(write(tmp_path, "b.md", pelican), SITE).draft is True


def test_title_option_gives_a_headerless_file_its_title(tmp_path):
    path = write(tmp_path, "2024-07-10-sweekly.md", "![cover](/c.png)\n\n## 序言\n\n正文。\n")
    with pytest.raises(InputError, match="--title"):
        load_issue(path, SITE)
    issue = load_issue(path, SITE, title=" Python 潮流周刊#60 ")
    assert (issue.title, issue.key, issue.body_first_line) == ("Python 潮流周刊#60", "2024-07-10-sweekly", 1)
    assert issue.body_markdown.startswith("![cover]")

"""The live preview: its HTTP endpoints over a real server, and its page in a real headless Chromium."""
from __future__ import annotations

import io
import json
import re
import socket
import struct
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from distributor.channels.email.settings import EmailSettings
from distributor.errors import InputError
from distributor.settings import ChannelsSettings, Settings, SiteSettings
from distributor.web.preview_server import serve_preview

from .browser import chromium
from .conftest import EXAMPLE, ROOT

TITLE = "示例周报·11 月 / 第四期 / 2026"
BODY_TEXT = "Linux 6.18 正式发布"
SITE_IMAGE = "images/example/riscv-board.jpg"     # the example issue's one image, under the site's base URL
WAIT_SECONDS = 15


@dataclass(frozen=True)
class RunningPreview:
    url: str
    issue: Path
    out: io.StringIO


def tiny_png() -> bytes:
    """Return a valid 2×2 red PNG, so the browser can show (and measure) the site image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@contextmanager
def serve(issue: Path, settings: Settings, title: str | None = None) -> Iterator[RunningPreview]:
    """Run serve_preview on a free port in a thread; stop it and check it returned 0 afterwards."""
    out, ready, stop = io.StringIO(), threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["status"] = serve_preview(issue, settings, port=0, out=out, title=title, ready=ready, stop=stop)
        except Exception as exc:   # surfaced by the assertion below
            outcome["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(WAIT_SECONDS), "the preview server did not start"
    assert "error" not in outcome, outcome.get("error")
    url = re.search(r"http://127\.0\.0\.1:\d+/", out.getvalue())
    assert url, out.getvalue()
    try:
        yield RunningPreview(url.group(0), issue, out)
    finally:
        stop.set()
        thread.join(WAIT_SECONDS)
    assert not thread.is_alive(), "the preview server did not stop"
    assert outcome == {"status": 0}


@pytest.fixture
def site_root(tmp_path: Path) -> Path:
    image = tmp_path / "site" / SITE_IMAGE
    image.parent.mkdir(parents=True)
    image.write_bytes(tiny_png())
    return tmp_path / "site"


@pytest.fixture
def running(tmp_path: Path, site_root: Path) -> Iterator[RunningPreview]:
    issue = tmp_path / "issue.md"
    issue.write_bytes(EXAMPLE.read_bytes())
    with serve(issue, Settings(site=SiteSettings(site_root=str(site_root)))) as preview:
        yield preview


def get(url: str, host: str | None = None) -> tuple[int, str, bytes]:
    """GET `url` and return the status, content type and body, errors included."""
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=WAIT_SECONDS + 10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def version(preview: RunningPreview, since: int | None = None) -> dict:
    """Ask the version endpoint; with `since` it answers once the version differs (or times out)."""
    query = "" if since is None else f"?since={since}"
    status, kind, body = get(f"{preview.url}version{query}")
    assert (status, kind) == (200, "application/json")
    return json.loads(body)


def edit(issue: Path, old: str, new: str) -> None:
    text = issue.read_text(encoding="utf-8")
    assert old in text
    issue.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_a_file_without_a_title_is_served_with_the_one_given(tmp_path: Path) -> None:
    issue = tmp_path / "2024-07-10-sweekly.md"
    issue.write_text("![cover](/images/cover.png)\n\n## 序言\n\n本周内容。\n", encoding="utf-8")
    with serve(issue, Settings(), title="Python 潮流周刊 第 60 期") as preview:
        page = get(preview.url)[2].decode()
    assert page.count("Python 潮流周刊 第 60 期") >= 4 and "no front matter" not in page


def test_page_has_the_three_panels_and_its_own_assets(running: RunningPreview) -> None:
    status, kind, body = get(running.url)
    page = body.decode()
    assert (status, kind) == (200, "text/html; charset=utf-8")
    for panel in ("email-panel", "wechat-panel", "text-panel"):
        assert f'id="{panel}"' in page
    assert page.count(TITLE) >= 4           # heading, email subject, WeChat title, text subject
    assert 'src="/email.html?v=1"' in page and 'src="/wechat.html?v=1"' in page
    assert "No warnings" in page and "badge-warn" not in page
    # Everything the page itself loads comes from this server: no absolute URL in a src or href.
    assert not re.search(r"""<(?:script|link|img|iframe)\b[^>]*(?:src|href)="https?:""", page)
    for name, kind in (("preview.css", "text/css"), ("preview.js", "text/javascript")):
        status, served_kind, body = get(f"{running.url}static/{name}")
        assert status == 200 and served_kind.startswith(kind) and body


def test_framed_documents_hold_the_renditions(running: RunningPreview) -> None:
    status, kind, email = get(f"{running.url}email.html")
    assert (status, kind) == (200, "text/html; charset=utf-8")
    email_html = email.decode()
    assert BODY_TEXT in email_html and "%%" not in email_html
    assert f'src="/site/{SITE_IMAGE}"' in email_html
    assert 'href="https://example.org/news/linux-6.18/"' in email_html    # links are not rewritten
    wechat = get(f"{running.url}wechat.html")[2].decode()
    assert TITLE in wechat and "Example Editors" in wechat
    assert "[1] https://example.org/news/linux-6.18/" in wechat          # the reference list at the end


def test_site_files_are_served_from_the_site_root_only(running: RunningPreview, site_root: Path) -> None:
    assert get(f"{running.url}site/{SITE_IMAGE}")[::2] == (200, tiny_png())
    (site_root.parent / "secret.txt").write_text("not for the browser")
    assert get(f"{running.url}site/../secret.txt")[0] == 404
    assert get(f"{running.url}site/%2e%2e/secret.txt")[0] == 404
    assert get(f"{running.url}site/images/none.png")[0] == 404
    assert get(f"{running.url}nothing-here")[0] == 404


def test_requests_for_another_host_name_are_refused(running: RunningPreview) -> None:
    assert get(running.url, host="attacker.example:80")[0] == 421


def test_a_save_raises_the_version_and_updates_the_page(running: RunningPreview) -> None:
    first = version(running)
    assert first == {"version": 1, "error": None}
    assert version(running, since=0)["version"] == 1      # a stale page is told at once
    edit(running.issue, "title: 示例周报", "title: 修订版周报")
    assert version(running, since=1) == {"version": 2, "error": None}
    page = get(running.url)[2].decode()
    assert "修订版周报·11 月" in page and 'data-version="2"' in page


def test_a_broken_save_is_shown_and_the_next_good_save_recovers(running: RunningPreview) -> None:
    good = running.issue.read_text(encoding="utf-8")
    running.issue.write_text(good.replace("title: 示例周报·11 月 / 第四期 / 2026\n", ""), encoding="utf-8")
    state = version(running, since=1)
    assert state["version"] == 2 and "front matter has no title" in state["error"]
    page = get(running.url)[2].decode()
    assert 'id="render-error"' in page and "front matter has no title" in page
    assert BODY_TEXT in get(f"{running.url}email.html")[2].decode()      # the last good rendering stays
    running.issue.write_text(good, encoding="utf-8")
    assert version(running, since=2) == {"version": 3, "error": None}
    assert 'id="render-error"' not in get(running.url)[2].decode()
    assert "error: " in running.out.getvalue()


def test_each_panel_lists_its_warnings(tmp_path: Path, site_root: Path) -> None:
    issue = tmp_path / "warned.md"
    issue.write_text("---\ntitle: 一个特别特别长的标题，长到超过了微信公众号对文章标题所允许的三十二个字符\n"
                     "cover: /images/missing-cover.png\n---\n\n正文 {{ page.date }}\n\n"
                     '![图](/images/missing.png)\n\n<iframe src="https://video.example.org/1"></iframe>\n',
                     encoding="utf-8")
    with serve(issue, Settings(site=SiteSettings(site_root=str(site_root)))) as preview:
        page = get(preview.url)[2].decode()
        panels = {name: re.search(rf'id="{name}-panel".*?</section>', page, re.S).group(0)
                  for name in ("email", "wechat", "text")}
        for panel in panels.values():
            assert "Liquid left as text" in panel and "embedded frame replaced by a link" in panel
        assert "missing image https://example.org/images/missing.png" in panels["email"]
        assert "missing image https://example.org/images/missing-cover.png" in panels["wechat"]
        assert "WeChat takes 32" in panels["wechat"]          # the title, shortened


def long_issue(folder: Path) -> Path:
    """120 paragraphs of some 400 characters: over Gmail's clip limit, and three WeChat articles."""
    issue = folder / "long.md"
    paragraphs = "\n\n".join(f"第 {number} 段：" + "内容很长的一段文字。" * 40 for number in range(120))
    issue.write_text(f"---\ntitle: 长长的一期\n---\n\n{paragraphs}\n", encoding="utf-8")
    return issue


def test_a_message_over_gmails_clip_limit_gets_a_warning_badge(tmp_path: Path) -> None:
    issue = long_issue(tmp_path)
    with serve(issue, Settings()) as preview:
        page = get(preview.url)[2].decode()
        badge = re.search(r'<span class="badge badge-warn" id="email-size".*?</span>', page, re.S)
        assert badge and "over 102 KB" in badge.group(0)


def test_a_split_issue_shows_each_wechat_article_under_its_title(tmp_path: Path) -> None:
    issue = long_issue(tmp_path)
    with serve(issue, Settings()) as preview:
        page = get(preview.url)[2].decode()
        frame = re.search(r'<iframe[^>]+src="([^"]*wechat[^"]*)"', page).group(1)
        document = get(preview.url.rstrip("/") + "/" + frame.lstrip("/"))[2].decode()
    titles = re.findall(r'<h1 class="rich-media-title[^"]*">([^<]*)</h1>', document)
    assert titles == ["长长的一期 (1/3)", "长长的一期 (2/3)", "长长的一期 (3/3)"]
    assert document.count("第 119 段") == 1 and "本期分为 3 篇" in document


def test_a_missing_issue_or_a_busy_port_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such issue file"):
        serve_preview(tmp_path / "absent.md", Settings(), port=0, out=io.StringIO())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = io.StringIO()
        with pytest.raises(InputError, match="cannot listen on 127.0.0.1"):
            serve_preview(EXAMPLE, Settings(), port=busy.getsockname()[1], out=out)
        assert out.getvalue() == "", "the issue was rendered before the port was taken"


@pytest.mark.parametrize("port", [65536, 99999, -1])
def test_a_port_out_of_range_is_an_input_error(port: int) -> None:
    out = io.StringIO()
    with pytest.raises(InputError, match=f"port {port} is out of range"):
        serve_preview(EXAMPLE, Settings(), port=port, out=out)
    assert out.getvalue() == ""


def test_page_in_headless_chromium(running: RunningPreview, tmp_path: Path) -> None:
    outside: list[str] = []
    refused: list[str] = []      # what the page's Content-Security-Policy blocked: nothing of its own

    def local_only(route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with chromium() as browser:
        from playwright.sync_api import expect
        page = browser.new_page(viewport={"width": 2400, "height": 1200})
        page.route("**/*", local_only)
        page.on("console", lambda message: refused.append(message.text)
                if "Content Security Policy" in message.text else None)
        page.goto(running.url)
        for panel in ("#email-panel", "#wechat-panel", "#text-panel"):
            expect(page.locator(panel)).to_contain_text(TITLE)
        for frame in ("#email-desktop", "#email-phone"):
            expect(page.frame_locator(frame).locator("body")).to_contain_text(BODY_TEXT)
        site_image = page.frame_locator("#email-desktop").locator(f'img[src="/site/{SITE_IMAGE}"]')
        expect(site_image).to_have_js_property("naturalWidth", 2)
        expect(page.frame_locator("#wechat-article").locator("body")).to_contain_text("[5] https://")
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        page.screenshot(path=tmp_path / "preview.png", full_page=True)

        edit(running.issue, "title: 示例周报", "title: 修订版周报")
        new_title = TITLE.replace("示例周报", "修订版周报")
        expect(page.locator("#issue-title")).to_have_text(new_title, timeout=WAIT_SECONDS * 1000)
        expect(page.frame_locator("#email-desktop").locator("h1")).to_contain_text(new_title)
        page.screenshot(path=tmp_path / "preview-after-edit.png", full_page=True)

        good = running.issue.read_text(encoding="utf-8")
        running.issue.write_text(good.replace("---\n", "---\ntitle: [unclosed\n", 1), encoding="utf-8")
        expect(page.locator("#render-error")).to_contain_text("invalid", timeout=WAIT_SECONDS * 1000)
        expect(page.frame_locator("#email-desktop").locator("h1")).to_contain_text(new_title)
        page.screenshot(path=tmp_path / "preview-broken-save.png")
        running.issue.write_text(good, encoding="utf-8")
        expect(page.locator("#render-error")).to_have_count(0, timeout=WAIT_SECONDS * 1000)
    assert outside == [] and refused == []
    assert (tmp_path / "preview.png").stat().st_size > 10_000


SCRIPTED = ('<script>document.documentElement.dataset.ran = "script";</script>'
            '<img src="/no-such-image.png" alt="" onerror="document.documentElement.dataset.ran = \'handler\'">')


def test_no_script_runs_in_the_rendered_issue_even_opened_on_its_own(tmp_path: Path, site_root: Path) -> None:
    """A template with script in it (or markup a sanitizer missed): the email document runs none of it, framed
    or opened as a page of its own, while the preview page's own script goes on running."""
    templates = tmp_path / "templates"
    (templates / "email").mkdir(parents=True)
    packaged = (ROOT / "templates" / "email" / "issue.html").read_text(encoding="utf-8")
    assert "</body>" in packaged
    (templates / "email" / "issue.html").write_text(packaged.replace("</body>", SCRIPTED + "</body>"),
                                                    encoding="utf-8")
    issue = tmp_path / "issue.md"
    issue.write_bytes(EXAMPLE.read_bytes())
    settings = Settings(site=SiteSettings(site_root=str(site_root)),
                        channels=ChannelsSettings({"email": EmailSettings(template_dir=str(templates))}))
    with serve(issue, settings) as preview, chromium() as browser:
        from playwright.sync_api import expect
        assert SCRIPTED in get(f"{preview.url}email.html")[2].decode()     # the script is there to be refused
        page = browser.new_page()
        page.goto(f"{preview.url}email.html")       # returns after the load event: the image has failed by then
        expect(page.locator("body")).to_contain_text(BODY_TEXT)
        assert page.locator("html").get_attribute("data-ran") is None
        page.goto(preview.url)
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        for frame in ("#email-desktop", "#email-phone"):
            expect(page.frame_locator(frame).locator("body")).to_contain_text(BODY_TEXT)
            assert page.frame_locator(frame).locator("html").get_attribute("data-ran") is None

"""The WeChat publish flow end to end: real wechatpy against the stand-in API on 127.0.0.1,
images served by a real static HTTP server or read from a site folder, a real SQLite ledger."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from distributor.channels.wechat.api import MemoryTokenStore, WechatApi, WechatApiConfig
from distributor.channels.wechat.article import content_as_sent
from distributor.channels.wechat.images import replace_image_sources
from distributor.channels.wechat.publisher import EDIT_NOT_SENT, WechatOutcome, WechatSteps, wechat_api, wechat_steps
from distributor.delivery.retry import RetryPolicy
from distributor.delivery.step_run import run_steps
from distributor.errors import (
    ChannelStoppedError,
    InputError,
    PermanentDeliveryError,
    UncertainDeliveryError,
)
from distributor.ledger.store import Ledger
from distributor.render.renditions import render_issue
from distributor.settings import Settings, load_settings
from tests.wechat_stub import IMAGE_SOURCE, LINK_TARGET, Fault, WechatStub, sample_png

from .conftest import EXAMPLE, ROOT
from .corpus import corpus_files, corpus_params
from .publish_helpers import fast_retry_and_ledger

TITLE = "泰晓资讯·第一期"
IMAGES = {"images/a.png": sample_png(b"first"), "images/b.png": sample_png(b"second"),
          "images/cover.png": sample_png(b"cover")}


class _QuietHandler(SimpleHTTPRequestHandler):
    served: list[str]

    def do_GET(self) -> None:
        self.served.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def stub():
    with WechatStub() as running:
        yield running


def site_folder(tmp_path: Path) -> Path:
    """Make a folder holding the site's images; return it."""
    root = tmp_path / "site"
    for name, data in IMAGES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve `folder` over HTTP on 127.0.0.1 while the block runs; yield (base URL, served paths)."""
    served: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"served": served})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def site(tmp_path):
    """A folder holding the site's images."""
    return site_folder(tmp_path)


@pytest.fixture
def image_server(site):
    """A static HTTP server on 127.0.0.1 serving the site folder; yields (base URL, served paths)."""
    with serving(site) as running:
        yield running


@pytest.fixture(autouse=True)
def app_secret(monkeypatch, stub):
    monkeypatch.setenv("WECHAT_APP_SECRET", stub.app_secret)


def write_issue(folder: Path, name: str = "issue-1", *, title: str = TITLE,
                images: tuple[str, ...] = ("/images/a.png?v=1&s=2", "/images/b.png"),
                cover: str | None = "/images/cover.png") -> Path:
    lines = [f"![图 {number}]({src})\n" for number, src in enumerate(images, start=1)]
    cover_line = f"cover: {cover}\n" if cover else ""
    path = folder / f"{name}.md"
    path.write_text(f"---\ntitle: {title}\npermalink: /news/{name}/\nauthor: 泰晓科技\n{cover_line}---\n\n"
                    "本周 **Linux** 要闻，详见 [内核邮件列表](https://lore.kernel.org/)。\n\n"
                    + "\n".join(lines), encoding="utf-8")
    return path


def configure(tmp_path: Path, stub: WechatStub, *, base_url: str = "https://example.org",
              site_root: Path | None = None, mode: str = "draft", extra: str = "",
              app_id: str | None = "stub") -> Settings:
    root_line = f"  site_root: {site_root}\n" if site_root else ""
    app_id = stub.app_id if app_id == "stub" else app_id
    path = tmp_path / "settings.yaml"
    path.write_text(f"""
site:
  base_url: {base_url}
{root_line}channels:
  wechat:
    app_id: {app_id or 'null'}
    base_url: {stub.base_url}
    mode: {mode}
    timeout_seconds: 1.0
    publish_poll_seconds: 0.01
    publish_wait_seconds: 2.0
{extra}
{fast_retry_and_ledger(tmp_path)}
""", encoding="utf-8")
    return load_settings(path)


def run(settings: Settings, issue_path: Path, **options) -> WechatOutcome:
    """Run the WeChat steps of the issue through the core step run, as a publish does."""
    renditions = render_issue(issue_path, settings, ["wechat"])
    ledger = Ledger(settings.ledger.path)
    try:
        steps = wechat_steps(renditions["wechat"], renditions.issue, settings, ledger, **options)
        wechat = settings.channels.wechat
        policy = RetryPolicy.from_settings(settings.retry)
        return asyncio.run(run_steps(steps, ledger, renditions.issue.key, channel="wechat", label="WeChat",
                                     policy=policy, lease_seconds=wechat.lease_seconds,
                                     lease_wait_seconds=wechat.lease_wait_seconds))
    finally:
        ledger.close()


def checkpoint(settings: Settings, key: str, step: str) -> str | None:
    ledger = Ledger(settings.ledger.path)
    try:
        return ledger.checkpoint(key, "wechat", step)
    finally:
        ledger.close()


def move_back(settings: Settings, key: str, step: str, seconds: float) -> None:
    """Make the time recorded for `step` `seconds` older, as if that step began that long ago."""
    ledger = Ledger(settings.ledger.path)
    try:
        ledger.save_checkpoint(key, "wechat", step, repr(float(ledger.checkpoint(key, "wechat", step)) - seconds))
    finally:
        ledger.close()


def edit(issue_path: Path, old: str, new: str) -> str:
    """Fix a typo in the issue file; return the new file's sha256."""
    text = issue_path.read_text(encoding="utf-8")
    assert old in text
    issue_path.write_text(text.replace(old, new), encoding="utf-8")
    return hashlib.sha256(issue_path.read_bytes()).hexdigest()


def the_draft(stub: WechatStub) -> dict:
    (articles,) = stub.drafts().values()
    return articles[0]


def test_draft_from_a_served_site_uploads_each_image_once(tmp_path, stub, site, image_server):
    base_url, served = image_server
    settings = configure(tmp_path, stub, base_url=base_url)
    outcome = run(settings, write_issue(tmp_path))
    assert (outcome.mode, outcome.resumed) == ("draft", False)
    assert outcome.detail == f"draft created: media_id {outcome.media_id}"
    assert sorted(served) == ["/images/a.png?v=1&s=2", "/images/b.png", "/images/cover.png"]
    assert sorted(stub.images().values()) == sorted([IMAGES["images/a.png"], IMAGES["images/b.png"]])
    assert list(stub.materials().values()) == [IMAGES["images/cover.png"]]
    article = the_draft(stub)
    sources = IMAGE_SOURCE.findall(article["content"])
    assert len(sources) == 2 and set(sources) == set(stub.images())
    assert LINK_TARGET.findall(article["content"]) == [] and "lore.kernel.org" in article["content"]
    assert (article["title"], article["author"]) == (TITLE, "泰晓科技")
    assert article["content_source_url"] == f"{base_url}/news/issue-1/"
    assert (article["need_open_comment"], article["only_fans_can_comment"]) == (0, 0)
    sent = stub.requests("draft/add")[0].body_text
    assert TITLE in sent and "\\u" not in sent
    assert checkpoint(settings, "/news/issue-1/", "draft") == outcome.media_id

    # The same issue again: recorded, nothing asked of WeChat. Another issue with the same
    # images: a second draft and not a single upload.
    before = len(stub.requests())
    again = run(settings, write_issue(tmp_path))
    assert (again.media_id, again.resumed, len(stub.requests())) == (outcome.media_id, True, before)
    assert again.detail.startswith("draft already created")
    other = run(settings, write_issue(tmp_path, "issue-2", title="泰晓资讯·第二期"))
    assert other.media_id != outcome.media_id and len(stub.drafts()) == 2
    assert len(stub.requests("media/uploadimg")) == 2 and len(stub.requests("material/add_material")) == 1
    assert len(stub.requests("stable_token")) == 1


def test_bundled_example_reads_images_from_the_site_root(tmp_path, stub, site):
    # base_url is not loopback: fetching would trip the loopback guard, so the files must be read.
    (site / "images" / "example").mkdir()
    board = sample_png(b"riscv board")
    (site / "images" / "example" / "riscv-board.jpg").write_bytes(board)
    (site / "images" / "example" / "cover.png").write_bytes(IMAGES["images/cover.png"])
    settings = configure(tmp_path, stub, site_root=site)
    outcome = run(settings, EXAMPLE)
    assert outcome.media_id in stub.drafts()
    assert list(stub.images().values()) == [board]
    assert list(stub.materials().values()) == [IMAGES["images/cover.png"]]
    assert IMAGE_SOURCE.findall(the_draft(stub)["content"]) == list(stub.images())
    assert the_draft(stub)["thumb_media_id"] == next(iter(stub.materials()))


def test_lost_draft_reply_adopts_the_draft_made(tmp_path, stub, site):
    settings = configure(tmp_path, stub, site_root=site)
    stub.inject("draft/add", Fault.lost_reply())
    outcome = run(settings, write_issue(tmp_path))
    assert outcome.detail == f"draft found after a lost reply: media_id {outcome.media_id}"
    assert list(stub.drafts()) == [outcome.media_id]
    assert len(stub.requests("draft/add")) == 1 and len(stub.requests("draft/batchget")) == 1
    assert run(settings, write_issue(tmp_path)).media_id == outcome.media_id
    assert len(stub.drafts()) == 1


def test_dropped_draft_request_is_made_again_after_looking(tmp_path, stub, site):
    settings = configure(tmp_path, stub, site_root=site)
    stub.inject("draft/add", Fault.drop())
    outcome = run(settings, write_issue(tmp_path))
    assert outcome.detail.startswith("draft created")
    assert len(stub.requests("draft/add")) == 2 and list(stub.drafts()) == [outcome.media_id]


def test_run_that_died_during_draft_add_is_resumed_by_looking(tmp_path, stub, site):
    settings = configure(tmp_path, stub, site_root=site)
    stub.inject("draft/add", Fault.lost_reply())
    stub.inject("draft/batchget", Fault.errcode(48001, "api unauthorized"))
    with pytest.raises(PermanentDeliveryError, match="48001"):
        run(settings, write_issue(tmp_path))
    assert len(stub.drafts()) == 1 and checkpoint(settings, "/news/issue-1/", "draft") is None
    outcome = run(settings, write_issue(tmp_path))
    assert outcome.resumed and outcome.detail.startswith("draft found from an interrupted run")
    assert list(stub.drafts()) == [outcome.media_id] and len(stub.requests("draft/add")) == 1


def test_draft_then_publish_resumes_without_a_second_draft(tmp_path, stub, site):
    issue = write_issue(tmp_path)
    drafted = run(configure(tmp_path, stub, site_root=site), issue)
    stub.publish_polls = 3
    settings = configure(tmp_path, stub, site_root=site, mode="publish")
    published = run(settings, issue)
    assert (published.mode, published.media_id, published.resumed) == ("publish", drafted.media_id, True)
    (article,) = stub.published().values()
    url = article["news_item"][0]["url"]
    assert published.detail == f"published: {url}"
    assert len(stub.requests("draft/add")) == 1 and len(stub.requests("freepublish/submit")) == 1
    assert len(stub.requests("freepublish/get")) == 3
    assert checkpoint(settings, "/news/issue-1/", "published") == url
    before = len(stub.requests())
    assert run(settings, issue).detail == f"already published: {url}" and len(stub.requests()) == before


@pytest.mark.parametrize(("status", "meaning"), [(2, "originality check"), (3, "publishing failed"),
                                                 (4, "review rejected")])
def test_failed_publish_is_permanent_with_its_meaning(tmp_path, stub, site, status, meaning):
    stub.publish_final_status = status
    with pytest.raises(PermanentDeliveryError, match=meaning) as caught:
        run(configure(tmp_path, stub, site_root=site, mode="publish"), write_issue(tmp_path))
    assert f"publish_status {status}" in str(caught.value)


def test_still_publishing_at_the_deadline_is_uncertain_and_a_rerun_polls_on(tmp_path, stub, site):
    stub.publish_polls = 1000
    settings = configure(tmp_path, stub, site_root=site, mode="publish",
                         extra="    publish_wait_seconds: 0.1")
    with pytest.raises(UncertainDeliveryError, match="re-run"):
        run(settings, write_issue(tmp_path))
    assert 2 <= len(stub.requests("freepublish/get")) <= 10  # back-off: a few polls, not a busy loop
    stub.publish_polls = 1
    outcome = run(settings, write_issue(tmp_path))
    assert outcome.resumed and outcome.detail.startswith("published: https://mp.weixin.qq.com/s/")
    assert len(stub.requests("freepublish/submit")) == 1


def test_status_reads_failing_while_publishing_are_retried_by_the_polling_policy(tmp_path, stub, site):
    # More failed reads than retry.attempts: only the polling policy, bounded by publish_wait_seconds,
    # decides when to stop asking.
    stub.publish_polls = 2
    stub.inject("freepublish/get", *[Fault.http_status(502)] * 4)
    outcome = run(configure(tmp_path, stub, site_root=site, mode="publish"), write_issue(tmp_path))
    assert outcome.detail.startswith("published: https://mp.weixin.qq.com/s/")
    assert len(stub.requests("freepublish/get")) == 6 and stub.pending_faults("freepublish/get") == 0


def test_unanswered_submit_is_not_made_again_until_a_publish_would_show(tmp_path, stub, site):
    settings = configure(tmp_path, stub, site_root=site, mode="publish")
    stub.inject("freepublish/submit", Fault.drop())
    with pytest.raises(UncertainDeliveryError, match="re-run after"):
        run(settings, write_issue(tmp_path))
    started = float(checkpoint(settings, "/news/issue-1/", "publish_started"))
    # Re-run at once: nothing published yet, which proves nothing while a publish may be running.
    with pytest.raises(UncertainDeliveryError) as caught:
        run(settings, write_issue(tmp_path))
    again_at = datetime.fromtimestamp(started + 600).astimezone()
    assert "WeChat console" in str(caught.value) and f"re-run after {again_at:%Y-%m-%d %H:%M:%S}" in str(caught.value)
    looks = [r for r in stub.requests("freepublish/batchget") if r.body_json["count"] != 1]   # not the permission probe
    assert len(stub.requests("freepublish/submit")) == 1 and len(looks) == 2
    # Eleven minutes on, still nothing published: the submit never took effect, so it is made again.
    move_back(settings, "/news/issue-1/", "publish_started", 11 * 60)
    outcome = run(settings, write_issue(tmp_path))
    assert outcome.detail.startswith("published: https://mp.weixin.qq.com/s/")
    assert len(stub.requests("freepublish/submit")) == 2 and len(stub.published()) == 1


def test_lost_submit_reply_is_found_among_published_articles_on_the_rerun(tmp_path, stub, site):
    settings = configure(tmp_path, stub, site_root=site, mode="publish")
    stub.inject("freepublish/submit", Fault.lost_reply())
    with pytest.raises(UncertainDeliveryError, match="re-run"):
        run(settings, write_issue(tmp_path))
    # Meanwhile WeChat finishes the job the lost reply was about.
    (publish_id,) = stub.publish_jobs()
    api = WechatApi(WechatApiConfig(stub.app_id, stub.app_secret, base_url=stub.base_url), MemoryTokenStore())
    assert api.publish_status(publish_id)["publish_status"] == 0
    outcome = run(settings, write_issue(tmp_path))
    (article,) = stub.published().values()
    assert outcome.detail == f"published (found from an interrupted run): {article['news_item'][0]['url']}"
    assert len(stub.requests("freepublish/submit")) == 1


@pytest.mark.parametrize("invalidate", [
    WechatStub.expire_tokens, WechatStub.revoke_tokens,
    lambda stub: stub.inject("draft/add", Fault.errcode(40001, "invalid credential, access_token is invalid")),
])
def test_rejected_token_costs_exactly_one_fetch(tmp_path, stub, site, invalidate):
    settings = configure(tmp_path, stub, site_root=site)
    run(settings, write_issue(tmp_path, "issue-1"))
    run(settings, write_issue(tmp_path, "issue-2", title="第二期"))
    assert len(stub.requests("stable_token")) == 1   # the ledger shares the token between runs
    invalidate(stub)
    run(settings, write_issue(tmp_path, "issue-3", title="第三期", images=("/images/a.png",)))
    assert len(stub.requests("stable_token")) == 2 and len(stub.drafts()) == 3
    assert stub.app_secret.encode() not in (tmp_path / "ledger.sqlite3").read_bytes()


def test_image_sources_are_replaced_in_parsed_html():
    content = ('<p><img alt="see src=\'https://example.org/a.png?v=1&amp;s=2\'" '
               'src="https://example.org/a.png?v=1&amp;s=2"> a &lt;b&gt;</p>\n<section>二</section>\n')
    uploaded = {"https://example.org/a.png?v=1&s=2": "http://mmbiz.qpic.cn/x?a=1&b=2"}
    replaced = replace_image_sources(content, uploaded)
    assert replaced == ('<p><img alt="see src=\'https://example.org/a.png?v=1&amp;s=2\'" '
                        'src="http://mmbiz.qpic.cn/x?a=1&amp;b=2"> a &lt;b&gt;</p>\n<section>二</section>\n')


def test_permanent_error_is_reported_and_not_retried(tmp_path, stub, site):
    stub.inject("draft/add", Fault.errcode(48001, "api unauthorized"))
    with pytest.raises(PermanentDeliveryError, match="lacks this API permission"):
        run(configure(tmp_path, stub, site_root=site), write_issue(tmp_path))
    assert len(stub.requests("draft/add")) == 1 and stub.drafts() == {}


def test_transient_errors_are_retried_by_the_core_policy(tmp_path, stub, site):
    stub.inject("media/uploadimg", Fault.http_status(502), Fault.lost_reply())
    outcome = run(configure(tmp_path, stub, site_root=site), write_issue(tmp_path, images=("/images/a.png",)))
    assert outcome.media_id in stub.drafts()
    assert len(stub.requests("media/uploadimg")) == 3


def test_mass_send_uses_a_clientmsgid_and_a_refused_repeat_counts_as_sent(tmp_path, stub, site):
    settings = configure(tmp_path, stub, site_root=site, mode="mass", extra="    tag_id: 7")
    stub.inject("message/mass/sendall", Fault.lost_reply())
    outcome = run(settings, write_issue(tmp_path))
    (send,) = stub.mass_sends()
    assert send["clientmsgid"] == "d-" + hashlib.sha256(b"/news/issue-1/").hexdigest()[:40]
    assert send["filter"] == {"is_to_all": False, "tag_id": 7} and send["media_id"] == outcome.media_id
    assert outcome.detail == f"mass send already accepted by WeChat: msg_id {send['msg_id']}"
    assert len(stub.requests("message/mass/sendall")) == 2
    assert checkpoint(settings, "/news/issue-1/", "mass_msg_id") == str(send["msg_id"])
    again = run(settings, write_issue(tmp_path))
    assert again.resumed and again.detail == f"already mass-sent: msg_id {send['msg_id']}"
    assert len(stub.requests("message/mass/sendall")) == 2


@pytest.mark.parametrize(("endpoint", "errcode"), [("message/mass/sendall", 45028),
                                                   ("media/uploadimg", 45009)])
def test_quota_stops_the_channel(tmp_path, stub, site, endpoint, errcode):
    stub.inject(endpoint, Fault.errcode(errcode, "reach max api daily quota limit"))
    with pytest.raises(ChannelStoppedError, match="quota reached; daily quotas reset"):
        run(configure(tmp_path, stub, site_root=site, mode="mass"), write_issue(tmp_path))
    assert len(stub.requests(endpoint)) == 1 and stub.mass_sends() == []


@pytest.mark.parametrize(("change", "message"), [
    ({"images": ("/images/missing.png",)}, "images/missing.png not found"),
    ({"images": ("/images/anim.gif",)}, "anim.gif cannot be read as an image"),
    ({"images": ("/images/notes.txt",)}, "notes.txt not an image this distributor can read"),
    ({"cover": "/images/missing-cover.png"}, "cover https://example.org/images/missing-cover.png not found"),
    ({"cover": None}, "WeChat needs a cover"),
])
def test_bad_input_is_refused_before_any_request(tmp_path, stub, site, change, message):
    (site / "images" / "anim.gif").write_bytes(b"GIF89a" + b"\x00" * 32)       # a GIF's signature, no image
    (site / "images" / "notes.txt").write_bytes(b"just text")
    with pytest.raises(InputError) as caught:
        run(configure(tmp_path, stub, site_root=site), write_issue(tmp_path, **change))
    assert message in str(caught.value)
    assert stub.requests() == []


def test_a_title_over_the_limit_is_shortened_with_a_warning(tmp_path, stub, site):
    settings = configure(tmp_path, stub, site_root=site)
    issue = write_issue(tmp_path, title="长" * 33)
    renditions = render_issue(issue, settings, ["wechat"])
    assert renditions["wechat"].title == "长" * 31 + "…"
    assert any("the title has 33 characters, WeChat takes 32" in warning for warning in renditions["wechat"].warnings)
    run(settings, issue)
    assert the_draft(stub)["title"] == "长" * 31 + "…"


def test_a_missing_image_names_the_file_and_line_that_reference_it(tmp_path, stub, site):
    issue = write_issue(tmp_path, images=("/images/b.png", "/images/missing.png"))
    line = next(number for number, text in enumerate(issue.read_text(encoding="utf-8").splitlines(), start=1)
                if "missing.png" in text)
    configure(tmp_path, stub, site_root=site)
    result = publish_cli(tmp_path, issue)
    assert result.returncode == 2 and result.stderr.startswith(f"distributor: error: {issue}:{line}: ")
    assert "images/missing.png not found" in result.stderr and stub.requests() == []


def test_missing_image_on_the_served_site_is_refused_before_any_request(tmp_path, stub, site, image_server):
    base_url, served = image_server
    with pytest.raises(InputError, match="images/gone.png not found: HTTP 404"):
        run(configure(tmp_path, stub, base_url=base_url), write_issue(tmp_path, images=("/images/gone.png",)))
    assert stub.requests() == [] and "/images/gone.png" in served


def test_missing_app_id_is_refused(tmp_path, stub, site):
    settings = configure(tmp_path, stub, site_root=site, app_id=None)
    with pytest.raises(InputError, match="channels.wechat.app_id is not set"):
        run(settings, write_issue(tmp_path))


@pytest.mark.parametrize(("mode", "options"), [("draft", {}), ("draft", {"to_wechat": "tinylab_editor"}),
                                                ("publish", {})])
def test_edited_issue_updates_its_draft_in_place(tmp_path, stub, site, mode, options):
    issue = write_issue(tmp_path)
    first = run(configure(tmp_path, stub, site_root=site), issue)
    new_hash = edit(issue, "本周 **Linux** 要闻", "本周 **Linux** 要闻速递")
    settings = configure(tmp_path, stub, site_root=site, mode=mode)
    outcome = run(settings, issue, **options)
    updated = f"draft updated with the edited issue: media_id {first.media_id}"
    # In mode publish the line says both: the draft was updated, then published.
    assert outcome.detail.startswith(f"{updated}; published: ") if mode == "publish" \
        else outcome.detail.endswith(updated)
    assert len(stub.requests("draft/add")) == 1 and len(stub.requests("draft/update")) == 1
    assert checkpoint(settings, "/news/issue-1/", "draft_hash") == new_hash
    if mode == "publish":
        (article,) = stub.published().values()
        assert "要闻速递" in article["news_item"][0]["content"] and stub.drafts() == {}
    else:
        content = the_draft(stub)["content"]
        assert list(stub.drafts()) == [first.media_id] and "要闻速递" in content
        assert set(IMAGE_SOURCE.findall(content)) == set(stub.images()) and len(stub.images()) == 2
    assert [p["media_id"] for p in stub.previews()] == [first.media_id] * ("to_wechat" in options)
    # Unchanged since: nothing is asked of WeChat.
    before = len(stub.requests())
    run(configure(tmp_path, stub, site_root=site), issue)
    assert len(stub.requests()) == before


def test_edit_after_the_draft_was_found_from_an_interrupted_run_updates_it(tmp_path, stub, site):
    settings = configure(tmp_path, stub, site_root=site)
    issue = write_issue(tmp_path)
    stub.inject("draft/add", Fault.lost_reply())
    stub.inject("draft/batchget", Fault.errcode(48001, "api unauthorized"))
    with pytest.raises(PermanentDeliveryError, match="48001"):
        run(settings, issue)
    new_hash = edit(issue, "本周 **Linux** 要闻", "本周 **Linux** 要闻速递")
    outcome = run(settings, issue)
    assert outcome.detail.startswith("draft found from an interrupted run and updated")
    assert list(stub.drafts()) == [outcome.media_id] and "要闻速递" in the_draft(stub)["content"]
    assert len(stub.requests("draft/add")) == 1
    assert checkpoint(settings, "/news/issue-1/", "draft_hash") == new_hash


@pytest.mark.parametrize("mode", ["publish", "mass"])
def test_edit_after_the_article_went_out_is_not_sent_and_says_so(tmp_path, stub, site, mode):
    issue = write_issue(tmp_path)
    settings = configure(tmp_path, stub, site_root=site, mode=mode)
    sent = run(settings, issue)
    old_hash = checkpoint(settings, "/news/issue-1/", "draft_hash")
    edit(issue, "本周 **Linux** 要闻", "本周 **Linux** 要闻速递")
    before = len(stub.requests())
    outcome = run(settings, issue)
    assert outcome.media_id == sent.media_id and outcome.detail.endswith(f"; {EDIT_NOT_SENT}")
    assert outcome.detail.startswith("already published: " if mode == "publish" else "already mass-sent: ")
    drafted = run(configure(tmp_path, stub, site_root=site), issue)
    assert drafted.detail == f"{EDIT_NOT_SENT}: media_id {sent.media_id}"
    assert len(stub.requests()) == before and stub.requests("draft/update") == []
    assert checkpoint(settings, "/news/issue-1/", "draft_hash") == old_hash
    articles = [a["news_item"][0] for a in stub.published().values()] or list(stub.drafts().values())[0]
    assert "要闻速递" not in articles[0]["content"]


def test_preview_goes_to_one_account_from_the_recorded_draft(tmp_path, stub, site):
    settings = configure(tmp_path, stub, site_root=site, mode="publish")
    first = run(settings, write_issue(tmp_path), to_wechat="tinylab_editor")
    second = run(settings, write_issue(tmp_path), to_wechat="tinylab_editor")
    assert (first.mode, first.resumed, second.resumed) == ("preview", False, True)
    assert first.detail.startswith("preview sent to tinylab_editor; draft created")
    assert [p["towxname"] for p in stub.previews()] == ["tinylab_editor"] * 2
    assert {p["media_id"] for p in stub.previews()} == {first.media_id} == set(stub.drafts())
    assert stub.requests("freepublish/submit") == [] and stub.requests("message/mass/sendall") == []


# --- through the command line ---------------------------------------------------------------------

def cli(tmp_path: Path, *args: str, secret: str | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI with the settings `configure` wrote (and the AppSecret the fixture set)."""
    environment = {**os.environ, **({"WECHAT_APP_SECRET": secret} if secret else {})}
    return subprocess.run([sys.executable, "-m", "distributor", "--settings", str(tmp_path / "settings.yaml"),
                           *args], capture_output=True, text=True, timeout=60, cwd=ROOT, env=environment)


def publish_cli(tmp_path: Path, issue: Path, *args: str, secret: str | None = None) -> subprocess.CompletedProcess:
    return cli(tmp_path, "publish", str(issue), "--yes", "--channel", "wechat", *args, secret=secret)


@pytest.mark.parametrize(("fault", "errcode", "hint"), [
    ("wrong secret", 40125, "check the configured app secret"),
    ("wrong app_id", 40013, "check the configured app_id"),
    ("IP not whitelisted", 40164, "add this server's IP to the account's IP whitelist"),
    ("IP not whitelisted after the token", 40164, "add this server's IP to the account's IP whitelist"),
])
def test_session_level_refusals_stop_the_channel_with_exit_3(tmp_path, stub, site, fault, errcode, hint):
    configure(tmp_path, stub, site_root=site, app_id="wx00000000000000ff" if fault == "wrong app_id" else "stub")
    if fault == "IP not whitelisted":
        stub.inject("stable_token", Fault.errcode(40164, "invalid ip 203.0.113.7, not in whitelist"))
    if fault == "IP not whitelisted after the token":
        stub.inject("media/uploadimg", Fault.errcode(40164, "invalid ip 203.0.113.7, not in whitelist"))
    wrong_secret = "wrong-secret-6a0f" if fault == "wrong secret" else None
    result = publish_cli(tmp_path, write_issue(tmp_path), secret=wrong_secret)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "wechat: stopped: wechat" in result.stdout and f"errcode {errcode}" in result.stdout
    assert hint in result.stdout and "publish again to resume" in result.stdout
    assert stub.requests("draft/add") == [] and stub.app_secret not in result.stdout + result.stderr
    assert wrong_secret is None or wrong_secret not in result.stdout + result.stderr


def test_status_shows_each_step_a_refused_publish_and_how_an_edit_submits_again(tmp_path, stub, site):
    configure(tmp_path, stub, site_root=site, mode="publish")
    issue = write_issue(tmp_path)
    stub.publish_final_status = 2
    refused = publish_cli(tmp_path, issue)
    assert refused.returncode == 1 and "the originality check failed" in refused.stdout, refused.stdout
    publish_again = f"distributor --settings {tmp_path / 'settings.yaml'} publish {issue} --channel wechat"

    shown = cli(tmp_path, "status", str(issue))
    assert shown.returncode == 0, shown.stderr
    (draft_id,) = stub.drafts()
    for line in ("  wechat:", "images uploaded: 2/2", f"cover: media_id {next(iter(stub.materials()))}",
                 f"draft: media_id {draft_id}", "failed at publish: wechat publish",
                 "the originality check failed (publish_status 2)", "edit the issue file, then publish again",
                 f"next: {publish_again}"):
        assert line in shown.stdout, shown.stdout
    state = json.loads(cli(tmp_path, "status", str(issue), "--json").stdout)["wechat"]
    assert (state["draft_media_id"], state["failed_step"], state["failure_kind"]) == (draft_id, "publish", "failed")
    assert "originality" in state["failure"] and state["next_command"] == publish_again

    # Without an edit, the refusal is reported again without asking WeChat to publish it again.
    again = publish_cli(tmp_path, issue)
    assert again.returncode == 1 and "has not changed since" in again.stdout, again.stdout
    assert len(stub.requests("freepublish/submit")) == 1

    # After an edit the draft is updated in place and submitted again, and the run says so.
    edit(issue, "本周 **Linux** 要闻", "本周 **Linux** 要闻速递")
    stub.publish_final_status = 0
    fixed = publish_cli(tmp_path, issue)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"draft updated with the edited issue: media_id {draft_id}; submitted again after the edit" in fixed.stdout
    (article,) = stub.published().values()
    assert f"published: {article['news_item'][0]['url']}" in fixed.stdout
    assert "要闻速递" in article["news_item"][0]["content"]
    assert len(stub.requests("draft/add")) == 1 and len(stub.requests("freepublish/submit")) == 2

    done = cli(tmp_path, "status", str(issue))
    assert f"article: {article['news_item'][0]['url']}" in done.stdout
    assert "published: nothing left to do" in done.stdout
    assert "failed" not in done.stdout and "next:" not in done.stdout
    assert json.loads(cli(tmp_path, "status", str(issue), "--json").stdout)["wechat"]["failure"] is None


def test_status_of_a_draft_says_an_edit_would_update_it(tmp_path, stub, site):
    configure(tmp_path, stub, site_root=site)
    issue = write_issue(tmp_path)
    assert publish_cli(tmp_path, issue).returncode == 0
    shown = cli(tmp_path, "status", str(issue)).stdout
    assert "the draft waits in the account's draft box for an editor" in shown and "next:" not in shown
    edit(issue, "本周 **Linux** 要闻", "本周 **Linux** 要闻速递")
    shown = cli(tmp_path, "status", str(issue)).stdout
    assert "(made from an earlier version of the issue file)" in shown and "updates the draft" in shown
    assert "next: distributor" in shown


def filled_issue(folder: Path, settings: Settings, images: tuple[str, ...], measure, target: int) -> Path:
    """Write an issue with `images` whose article, measured by `measure`, is `target` characters."""
    def write(filler: int) -> Path:
        path = write_issue(folder, "long", images=images)
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("要闻", "要闻" + "字" * filler, 1), encoding="utf-8")
        return path
    base = measure(render_issue(write(0), settings, ["wechat"])["wechat"])
    path = write(target - base)
    assert measure(render_issue(path, settings, ["wechat"])["wechat"]) == target
    return path


FOUR_IMAGES = ("/images/a.png", "/images/b.png", "/images/c.png", "/images/d.png")


def test_content_over_the_limit_once_uploaded_urls_count_is_split_the_same_by_preview_and_publish(
        tmp_path, stub, site):
    for name in ("c", "d"):
        (site / "images" / f"{name}.png").write_bytes(sample_png(name.encode()))
    settings = configure(tmp_path, stub, site_root=site)
    # 19,913 characters as rendered, as in the report: under the limit before the images are uploaded,
    # over it once their src are WeChat's URLs: split in two, its images in the second article.
    issue = filled_issue(tmp_path, settings, FOUR_IMAGES, lambda article: len(article.content), 19_913)
    rendition = render_issue(issue, settings, ["wechat"])["wechat"]
    assert [part.title for part in rendition.articles] == [f"{TITLE} (1/2)", f"{TITLE} (2/2)"]
    preview = cli(tmp_path, "preview", str(issue), "--out", str(tmp_path / "preview"))
    assert preview.returncode == 0 and "warning: wechat" not in preview.stdout, preview.stdout
    assert (tmp_path / "preview" / "wechat-2.html").exists()
    dry = publish_cli(tmp_path, issue, "--dry-run")
    assert dry.returncode == 0 and "would add a draft of 2 articles" in dry.stdout, dry.stdout + dry.stderr
    assert stub.requests() == []
    published = publish_cli(tmp_path, issue)
    assert published.returncode == 0, published.stdout + published.stderr
    (articles,) = stub.drafts().values()
    assert [article["title"] for article in articles] == [part.title for part in rendition.articles]
    assert all(len(article["content"]) < 20_000 for article in articles)
    assert "本期分为 2 篇" in articles[0]["content"] and "本期分为" not in articles[1]["content"]


def test_content_just_under_the_limit_with_the_longest_urls_is_published(tmp_path, stub, site):
    for name in ("c", "d"):
        (site / "images" / f"{name}.png").write_bytes(sample_png(name.encode()))
    settings = configure(tmp_path, stub, site_root=site)
    issue = filled_issue(tmp_path, settings, FOUR_IMAGES, lambda article: len(content_as_sent(article)[0]), 19_999)
    preview = cli(tmp_path, "preview", str(issue), "--out", str(tmp_path / "preview"))
    assert "warning: wechat content" not in preview.stdout
    published = publish_cli(tmp_path, issue)
    assert published.returncode == 0, published.stdout + published.stderr
    assert len(stub.requests("media/uploadimg")) == 4 and len(stub.drafts()) == 1
    assert len(the_draft(stub)["content"]) < 19_999


def test_check_fetches_a_token_and_names_a_wrong_secret(tmp_path, stub):
    for folder in (tmp_path / "good", tmp_path / "bad"):      # each its own ledger: no token cached yet
        folder.mkdir()
        configure(folder, stub, extra="  email: {enabled: false}\n  text: {enabled: false}")
    good = cli(tmp_path / "good", "check")
    assert good.returncode == 0 and good.stdout.splitlines() == [
        f"wechat: access token fetched for {stub.app_id}; may publish (freepublish): yes; may mass-send: yes"], \
        good.stdout + good.stderr
    bad = cli(tmp_path / "bad", "check", secret="not-the-secret")
    assert bad.returncode == 1 and bad.stdout.startswith("wechat: ") and "app secret" in bad.stdout, bad.stdout


@pytest.mark.parametrize("mode", ["draft", "publish", "mass"])
def test_check_says_whether_an_unverified_account_can_publish(tmp_path, stub, mode):
    stub.verified = False
    configure(tmp_path, stub, mode=mode, extra="  email: {enabled: false}\n  text: {enabled: false}")
    result = cli(tmp_path, "check")
    ways = "may publish (freepublish): no (errcode 48001); may mass-send: no (errcode 48001)"
    if mode == "draft":
        assert result.returncode == 0 and result.stdout.strip() == (
            f"wechat: access token fetched for {stub.app_id}; {ways}"), result.stdout
    else:
        assert result.returncode == 1 and result.stdout.strip() == (
            f"wechat: access token fetched for {stub.app_id}; {ways}: channels.wechat.mode {mode} cannot work "
            "for this account, mode draft can"), result.stdout


@pytest.mark.parametrize("mode", ["publish", "mass"])
def test_publishing_on_an_unverified_account_stops_before_the_draft(tmp_path, stub, site, mode):
    stub.verified = False
    configure(tmp_path, stub, site_root=site, mode=mode)
    result = publish_cli(tmp_path, write_issue(tmp_path))
    assert result.returncode == 3, result.stdout + result.stderr
    verb = "publish (freepublish)" if mode == "publish" else "mass-send"
    assert (f"the account {stub.app_id} may not {verb} (errcode 48001, api unauthorized: since 2025 WeChat grants "
            "it to verified accounts only); nothing was sent: set channels.wechat.mode: draft") in result.stdout
    assert stub.requests("draft/add") == [] and stub.requests("media/uploadimg") == []
    # In mode draft the same account makes its draft.
    configure(tmp_path, stub, site_root=site, mode="draft")
    assert publish_cli(tmp_path, write_issue(tmp_path)).returncode == 0
    assert len(stub.drafts()) == 1


def test_mass_mode_on_an_account_that_may_publish_names_mode_publish(tmp_path, stub, site):
    stub.inject("message/mass/speed/get", Fault.errcode(48001, "api unauthorized"))
    configure(tmp_path, stub, site_root=site, mode="mass")
    result = publish_cli(tmp_path, write_issue(tmp_path))
    assert result.returncode == 3 and "set channels.wechat.mode: publish" in result.stdout, result.stdout
    assert stub.requests("draft/add") == []


def long_issue(folder: Path, paragraphs: int, *, marker: str = "") -> Path:
    """An issue of `paragraphs` paragraphs of some 400 characters each, with one site image."""
    body = "\n\n".join(f"第 {number} 段{marker}：" + "内容很长的一段文字。" * 40 for number in range(paragraphs))
    path = folder / "long.md"
    path.write_text(f"---\ntitle: {TITLE}\npermalink: /news/long/\ncover: /images/cover.png\n---\n\n{body}\n\n"
                    "![图](/images/b.png)\n", encoding="utf-8")
    return path


def test_a_long_issue_is_one_draft_of_several_articles_updated_in_place_after_an_edit(tmp_path, stub, site):
    settings = configure(tmp_path, stub, site_root=site)
    issue = long_issue(tmp_path, 120)
    outcome = run(settings, issue)
    assert "3 articles: the issue did not fit one" in outcome.detail
    (media_id, articles), = stub.drafts().items()
    assert [article["title"] for article in articles] == [f"{TITLE} ({n}/3)" for n in (1, 2, 3)]
    assert len({article["thumb_media_id"] for article in articles}) == 1
    assert all(len(article["content"]) < 20_000 for article in articles)
    assert "".join(article["content"] for article in articles).count("段：") == 120     # each paragraph once
    # An edit of the same length: the three articles are updated in place, one draft still.
    long_issue(tmp_path, 120, marker="（改）")
    outcome = run(settings, issue)
    updates = stub.requests("draft/update")
    assert sorted(request.body_json["index"] for request in updates) == [0, 1, 2]
    assert list(stub.drafts()) == [media_id] and "段（改）" in stub.drafts()[media_id][2]["content"]
    # An edit that needs fewer articles: the draft is made anew and the old one deleted.
    long_issue(tmp_path, 60)
    outcome = run(settings, issue)
    (new_id, articles), = stub.drafts().items()
    assert new_id != media_id and len(articles) == 2 and "replacing draft" in outcome.detail
    assert [request.body_json["media_id"] for request in stub.requests("draft/delete")] == [media_id]


def any_image(url: str, settings: Settings, what: str, limit: int) -> bytes:
    """Every remote image of a corpus issue, as a small PNG: the tests reach no other host."""
    return sample_png(url.encode())


@pytest.mark.parametrize("path", corpus_params(corpus_files()))
def test_every_corpus_issue_fits_a_draft(tmp_path, stub, path):
    settings = configure(tmp_path, stub, extra="    default_cover: /images/cover.png")
    renditions = render_issue(path, settings, ["wechat"])
    assert not [warning for warning in renditions["wechat"].warnings if "limit" in warning]
    ledger = Ledger(settings.ledger.path)
    try:
        steps = WechatSteps(renditions["wechat"], renditions.issue, settings, wechat_api(settings, ledger), any_image)
        policy = RetryPolicy.from_settings(settings.retry)
        asyncio.run(run_steps(steps, ledger, renditions.issue.key, channel="wechat", label="WeChat", policy=policy,
                              lease_seconds=30, lease_wait_seconds=5))
    finally:
        ledger.close()
    (articles,) = stub.drafts().values()
    assert len(articles) == len(renditions["wechat"].articles) <= 8


def picture(kind: str, size: tuple[int, int] = (320, 200), *, noise: bool = False, frames: int = 1,
            colour: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    """An image made with Pillow: `noise` makes one that does not compress (a screenshot's worst case)."""
    out = io.BytesIO()
    first = (Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)) if noise
             else Image.new("RGB", size, colour))
    if kind == "gif":
        more = [Image.new("RGB", size, (200, 40, 40)) for _ in range(frames - 1)]
        first.save(out, "GIF", save_all=True, append_images=more, duration=100, loop=0)
    elif kind == "webp":
        first.convert("RGBA").save(out, "WEBP", lossless=True)
    else:
        first.save(out, kind.upper())
    return out.getvalue()


SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="600" height="300">'
       b'<rect width="600" height="300" fill="#2b7a78"/><circle cx="300" cy="150" r="100" fill="#fff"/></svg>')


def test_gif_webp_svg_and_a_3_mb_png_become_uploads_under_1_mb_and_a_rerun_uploads_nothing(tmp_path, stub, site):
    (site / "images" / "anim.gif").write_bytes(picture("gif", frames=3))
    (site / "images" / "logo.webp").write_bytes(picture("webp", colour=(250, 200, 0)))
    (site / "images" / "diagram.svg").write_bytes(SVG)
    (site / "images" / "shot.png").write_bytes(picture("png", (1600, 1000), noise=True))
    assert (site / "images" / "shot.png").stat().st_size > 3 * 1024 * 1024
    (site / "images" / "cover.webp").write_bytes(picture("webp", (900, 500)))
    settings = configure(tmp_path, stub, site_root=site)
    issue = write_issue(tmp_path, images=("/images/anim.gif", "/images/logo.webp", "/images/diagram.svg",
                                          "/images/shot.png"), cover="/images/cover.webp")
    run(settings, issue)
    uploads = list(stub.images().values())
    assert len(uploads) == 4 and all(len(data) < 1024 * 1024 for data in uploads)
    opened = [Image.open(io.BytesIO(data)) for data in uploads]
    assert {image.format for image in opened} <= {"JPEG", "PNG"}
    assert opened[2].size == (600, 300)                          # the SVG drawn at its own size
    assert opened[3].width <= 1080                               # the screenshot scaled to a phone's width
    (cover,) = stub.materials().values()
    assert Image.open(io.BytesIO(cover)).format in ("JPEG", "PNG")
    before = len(stub.requests("media/uploadimg"))
    write_issue(tmp_path, title="泰晓资讯·第一期（修订）", images=("/images/anim.gif", "/images/logo.webp",
                "/images/diagram.svg", "/images/shot.png"), cover="/images/cover.webp")
    run(settings, issue)                                         # an edit: the draft is updated
    assert len(stub.requests("media/uploadimg")) == before       # the same conversions: nothing uploaded again


@pytest.mark.parametrize(("name", "data", "message"), [
    ("bomb.png", None, "has more than 40000000 pixels"),
    ("broken.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><rect", "is an SVG that cannot be read"),
    ("laughs.svg", b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a0 "aaaaaaaaaa">'
                   + b"".join(b'<!ENTITY a%d "%s">' % (i, b"&a%d;" % (i - 1) * 10) for i in range(1, 10))
                   + b']><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>&a9;</text></svg>',
     "is an SVG that cannot be read"),
])
def test_a_hostile_image_is_refused_in_one_line_before_any_request(tmp_path, stub, site, name, data, message):
    if data is None:
        # A PNG whose header claims 100,000 x 100,000 pixels, over 1 MB (a text chunk), so it is converted.
        small = io.BytesIO()
        Image.new("L", (1, 1)).save(small, "PNG")
        raw = bytearray(small.getvalue())
        raw[16:24] = (100_000).to_bytes(4, "big") * 2
        raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")
        text = b"tEXt" + b"Comment\x00" + b"x" * (1100 * 1024)
        chunk = (len(text) - 4).to_bytes(4, "big") + text + zlib.crc32(text).to_bytes(4, "big")
        data = bytes(raw[:33]) + chunk + bytes(raw[33:])
    (site / "images" / name).write_bytes(data)
    settings = configure(tmp_path, stub, site_root=site)
    issue = write_issue(tmp_path, images=(f"/images/{name}",))
    with pytest.raises(InputError, match=message) as caught:
        run(settings, issue)
    assert "\n" not in str(caught.value) and name in str(caught.value)
    assert stub.requests() == []

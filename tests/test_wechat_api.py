"""WechatApi against the stand-in WeChat server: real wechatpy, real HTTP on 127.0.0.1."""
from __future__ import annotations

import socket
import traceback
from datetime import datetime, timezone

import pytest

from distributor.channels.wechat.api import MemoryTokenStore, WechatApi, WechatApiConfig
from distributor.errors import (
    ChannelStoppedError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from tests.wechat_stub import Fault, WechatStub, sample_png

CHINESE_TITLE = "泰晓资讯·Linux 周报 第一期"
CHINESE_CONTENT = "<p>本周 Linux 内核动态：调度器与内存管理的新补丁。</p>"


@pytest.fixture
def stub():
    with WechatStub(publish_polls=2) as running:
        yield running


def make_api(stub: WechatStub, tokens: MemoryTokenStore | None = None, *, timeout: float = 1.0,
             clock=None, base_url: str | None = None, secret: str | None = None) -> WechatApi:
    config = WechatApiConfig(stub.app_id, secret or stub.app_secret,
                             base_url=base_url or stub.base_url, timeout_seconds=timeout)
    extra = {"clock": clock} if clock else {}
    return WechatApi(config, tokens or MemoryTokenStore(), **extra)


def article(api: WechatApi, **fields: str) -> dict:
    cover = api.add_cover("cover.png", sample_png(b"cover"), "image/png")
    return {"title": CHINESE_TITLE, "author": "泰晓科技", "digest": "本周要闻",
            "content": CHINESE_CONTENT, "thumb_media_id": cover, **fields}


def test_token_is_fetched_once_and_shared_by_instances_with_one_store(stub):
    tokens = MemoryTokenStore()
    make_api(stub, tokens).list_drafts(0, 10)
    make_api(stub, tokens).list_drafts(0, 10)
    fetches = stub.requests("stable_token")
    assert len(fetches) == 1
    assert fetches[0].body_json == {"grant_type": "client_credential", "appid": stub.app_id,
                                    "secret": stub.app_secret, "force_refresh": False}
    assert stub.app_secret not in str(fetches[0].query)
    used = {r.query["access_token"] for r in stub.requests("draft/batchget")}
    assert used == {tokens.load(stub.app_id)[0]}


def test_expired_token_is_dropped_and_refetched_exactly_once(stub):
    tokens = MemoryTokenStore()
    api = make_api(stub, tokens)
    api.list_drafts(0, 10)
    stub.expire_tokens()
    with pytest.raises(TransientDeliveryError, match="access token expired") as caught:
        api.list_drafts(0, 10)
    assert "42001" in str(caught.value)
    assert tokens.load(stub.app_id) is None
    api.list_drafts(0, 10)
    api.list_drafts(0, 10)
    assert len(stub.requests("stable_token")) == 2
    first, rejected, *retried = [r.query["access_token"] for r in stub.requests("draft/batchget")]
    assert first == rejected and retried[0] == retried[1] != first


def test_token_close_to_expiry_is_refreshed_before_use(stub):
    now = [1_000_000.0]
    api = make_api(stub, clock=lambda: now[0])
    api.list_drafts(0, 10)
    now[0] += 7200 - 299
    api.list_drafts(0, 10)
    assert len(stub.requests("stable_token")) == 2


def test_upload_image_returns_the_stub_url_and_sends_the_bytes(stub):
    data = sample_png(b"\r\n\x00\xff binary \r\n--")
    url = make_api(stub).upload_image("figure.png", data, "image/png")
    assert url.startswith("http://mmbiz.qpic.cn/")
    assert stub.images()[url] == data
    upload = stub.requests("media/uploadimg")[0].file("media")
    assert (upload.filename, upload.content_type, upload.data) == ("figure.png", "image/png", data)


def test_upload_of_an_unsupported_type_is_permanent(stub):
    with pytest.raises(PermanentDeliveryError, match="40005"):
        make_api(stub).upload_image("anim.gif", b"GIF89a....", "image/gif")


def test_add_cover_returns_a_media_id_the_stub_keeps(stub):
    data = sample_png(b"cover")
    media_id = make_api(stub).add_cover("cover.png", data, "image/png")
    assert stub.materials()[media_id] == data
    assert stub.requests("material/add_material")[0].query["type"] == "image"


def test_chinese_draft_goes_out_as_utf8_not_escaped(stub):
    api = make_api(stub)
    media_id = api.add_draft([article(api)])
    sent = stub.requests("draft/add")[0].body_text
    assert CHINESE_TITLE in sent and CHINESE_CONTENT in sent
    assert "\\u" not in sent
    assert stub.drafts()[media_id][0]["title"] == CHINESE_TITLE
    assert [d["media_id"] for d in api.list_drafts(0, 20)] == [media_id]


REFUSED_DRAFTS = [
    ({"title": "长" * 33}, "45003"),
    ({"author": "作" * 17}, "45110"),
    ({"content": "<p><a href='https://example.com/'>外链</a></p>"}, "45166"),
    ({"content": "<p><img src='https://example.com/a.png'></p>"}, "45166"),
    ({"thumb_media_id": "unknown"}, "40007"),
]


@pytest.mark.parametrize(("fields", "errcode"), REFUSED_DRAFTS)
def test_stub_refuses_drafts_the_real_api_refuses(stub, fields, errcode):
    api = make_api(stub)
    with pytest.raises(PermanentDeliveryError, match=errcode):
        api.add_draft([article(api, **fields)])
    assert stub.drafts() == {}


def test_update_draft_replaces_the_article_in_place(stub):
    api = make_api(stub)
    media_id = api.add_draft([article(api)])
    corrected = "<p>本周 Linux 内核动态：调度器、内存管理与文件系统的新补丁。</p>"
    api.update_draft(media_id, 0, article(api, content=corrected))
    assert list(stub.drafts()) == [media_id] and stub.drafts()[media_id][0]["content"] == corrected
    sent = stub.requests("draft/update")[0]
    assert (sent.body_json["media_id"], sent.body_json["index"]) == (media_id, 0)
    assert sent.body_json["articles"]["content"] == corrected and "\\u" not in sent.body_text


@pytest.mark.parametrize(("fields", "errcode"), REFUSED_DRAFTS)
def test_stub_refuses_draft_updates_the_real_api_refuses(stub, fields, errcode):
    api = make_api(stub)
    media_id = api.add_draft([article(api)])
    kept = stub.drafts()
    with pytest.raises(PermanentDeliveryError, match=errcode):
        api.update_draft(media_id, 0, article(api, **fields))
    assert stub.drafts() == kept


def test_update_of_an_unknown_draft_is_permanent(stub):
    api = make_api(stub)
    with pytest.raises(PermanentDeliveryError, match="40007"):
        api.update_draft("no-such-draft", 0, article(api))


def test_publish_job_completes_after_the_configured_polls(stub):
    api = make_api(stub)
    media_id = api.add_draft([article(api)])
    publish_id = api.submit_publish(media_id)
    assert api.publish_status(publish_id)["publish_status"] == 1
    done = api.publish_status(publish_id)
    assert done["publish_status"] == 0
    assert done["article_detail"]["item"][0]["article_url"].startswith("https://mp.weixin.qq.com/s/")
    assert [p["article_id"] for p in api.list_published(0, 10)] == [done["article_id"]]
    assert api.list_drafts(0, 10) == []



def test_failed_publish_keeps_the_draft(stub):
    stub.publish_final_status = 3
    api = make_api(stub)
    media_id = api.add_draft([article(api)])
    publish_id = api.submit_publish(media_id)
    api.publish_status(publish_id)
    failed = api.publish_status(publish_id)
    assert (failed["publish_status"], failed["fail_idx"]) == (3, [1])
    assert list(stub.drafts()) == [media_id] and api.list_published(0, 10) == []

def test_send_to_all_builds_the_sendall_body_and_a_repeat_counts_as_sent(stub):
    api = make_api(stub)
    media_id = api.add_draft([article(api)])
    first = api.send_to_all(media_id, tag_id=None, clientmsgid="issue-1")
    again = api.send_to_all(media_id, tag_id=None, clientmsgid="issue-1")
    assert again["errcode"] == 45065 and again["msg_id"] == first["msg_id"]
    assert len(stub.mass_sends()) == 1
    assert stub.requests("message/mass/sendall")[0].body_json == {
        "filter": {"is_to_all": True}, "mpnews": {"media_id": media_id}, "msgtype": "mpnews",
        "send_ignore_reprint": 0, "clientmsgid": "issue-1"}
    api.send_to_all(media_id, tag_id=7, clientmsgid="issue-1-tag")
    assert stub.mass_sends()[1]["filter"] == {"is_to_all": False, "tag_id": 7}


def test_send_preview_reaches_the_named_account(stub):
    api = make_api(stub)
    media_id = api.add_draft([article(api)])
    assert api.send_preview(media_id, "tinylab_editor")["errcode"] == 0
    assert stub.previews()[0]["towxname"] == "tinylab_editor"


@pytest.mark.parametrize(("fault", "error", "acted"), [
    (Fault.http_status(502), TransientDeliveryError, False),
    (Fault.http_status(503), TransientDeliveryError, False),
    (Fault.errcode(-1, "system error"), TransientDeliveryError, False),
    (Fault.html_page(), TransientDeliveryError, False),
    (Fault.drop(), UncertainDeliveryError, False),
    (Fault.lost_reply(), UncertainDeliveryError, True),
])
def test_faults_are_classified(stub, fault, error, acted):
    api = make_api(stub)
    draft = article(api)
    stub.inject("draft/add", fault)
    with pytest.raises(error) as caught:
        api.add_draft([draft])
    assert type(caught.value) is error
    assert stub.requests("draft/add")[0].fault == fault.kind
    assert stub.pending_faults("draft/add") == 0
    assert len(stub.drafts()) == (1 if acted else 0)


def test_html_gateway_page_is_named_in_the_error(stub):
    stub.inject("draft/batchget", Fault.html_page())
    with pytest.raises(TransientDeliveryError, match="gateway page"):
        make_api(stub).list_drafts(0, 10)


def test_slow_reply_past_the_timeout_is_uncertain(stub):
    api = make_api(stub, timeout=0.3)
    draft = article(api)
    stub.inject("draft/add", Fault.slow(1.0))
    with pytest.raises(UncertainDeliveryError, match="ReadTimeout"):
        api.add_draft([draft])


@pytest.mark.parametrize("fault", [Fault.slow(1.0), Fault.drop()])
def test_lost_reply_to_a_read_is_only_transient(stub, fault):
    api = make_api(stub, timeout=0.3)
    api.list_drafts(0, 10)
    stub.inject("freepublish/get", fault)
    with pytest.raises(TransientDeliveryError) as caught:
        api.publish_status("100000001")
    assert type(caught.value) is TransientDeliveryError


def test_refused_connection_is_transient(stub):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = make_api(stub, base_url=f"http://127.0.0.1:{port}/")
    with pytest.raises(TransientDeliveryError, match="could not connect"):
        api.list_drafts(0, 10)


@pytest.mark.parametrize("errcode", [45009, 45028])
def test_quota_stops_the_channel_until_midnight_beijing(stub, errcode):
    ten_utc = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc).timestamp()
    stub.inject("message/mass/sendall", Fault.errcode(errcode, "quota"))
    with pytest.raises(ChannelStoppedError) as caught:
        make_api(stub, clock=lambda: ten_utc).send_to_all("m", tag_id=None, clientmsgid="c")
    assert "midnight Beijing time" in str(caught.value)
    assert "2026-03-02 00:00 UTC+8" in str(caught.value)


def test_clientmsgid_retried_too_fast_asks_for_a_minute(stub):
    stub.inject("message/mass/sendall", Fault.errcode(45066, "clientmsgid retry too fast"))
    with pytest.raises(TransientDeliveryError) as caught:
        make_api(stub).send_to_all("m", tag_id=None, clientmsgid="c")
    assert caught.value.retry_after_seconds == 60


@pytest.mark.parametrize(("errcode", "hint"), [
    (48001, "the account lacks this API permission"),
    (53503, "publish check"),
    (40007, "invalid media_id"),
    (45166, "45166"),
])
def test_other_errcodes_are_permanent_with_a_hint(stub, errcode, hint):
    stub.inject("freepublish/submit", Fault.errcode(errcode, "refused"))
    with pytest.raises(PermanentDeliveryError) as caught:
        make_api(stub).submit_publish("m")
    assert hint in str(caught.value) and str(errcode) in str(caught.value)


def test_wrong_secret_stops_the_channel_and_is_never_shown(stub):
    wrong = "wrong-secret-8c1d"
    api = make_api(stub, secret=wrong)
    with pytest.raises(ChannelStoppedError, match="40125") as caught:
        api.list_drafts(0, 10)
    assert wrong not in str(caught.value) and wrong not in (caught.value.reply or "")


@pytest.mark.parametrize(("endpoint", "errcode", "hint"), [
    ("stable_token", 40013, "check the configured app_id"),
    ("stable_token", 40001, "check the configured app secret"),
    ("stable_token", 40164, "IP whitelist"),
    ("draft/batchget", 40164, "IP whitelist"),
])
def test_refused_credentials_or_ip_stop_the_channel_with_a_hint(stub, endpoint, errcode, hint):
    stub.inject(endpoint, Fault.errcode(errcode, "refused"))
    with pytest.raises(ChannelStoppedError) as caught:
        make_api(stub).list_drafts(0, 10)
    assert f"errcode {errcode}" in str(caught.value) and hint in str(caught.value)


def test_secret_and_token_never_appear_in_errors_or_reprs(stub):
    tokens = MemoryTokenStore()
    api = make_api(stub, tokens)
    api.list_drafts(0, 10)
    token = tokens.load(stub.app_id)[0]
    stub.inject("draft/batchget", Fault.errcode(40164, f"ip refused for {stub.app_secret} {token}"),
                Fault.http_status(502), Fault.drop(), Fault.html_page())
    errors = []
    for _ in range(4):
        with pytest.raises(Exception) as caught:
            api.list_drafts(0, 10)
        errors.append(caught.value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    offline = make_api(stub, tokens, base_url=f"http://127.0.0.1:{port}/")
    with pytest.raises(TransientDeliveryError) as caught:
        offline.list_drafts(0, 10)
    errors.append(caught.value)
    shown = [repr(api), repr(api._config)] + [f"{e} {e!r} {getattr(e, 'reply', '')}" for e in errors]
    for text in shown:
        assert stub.app_secret not in text and token not in text


def test_stub_binds_only_the_loopback_address(stub):
    assert stub.address[0] == "127.0.0.1"
    assert stub.base_url.startswith("http://127.0.0.1:")


def chained(error: BaseException) -> list[BaseException]:
    """Return the error and every exception reachable through __cause__ and __context__."""
    found: list[BaseException] = []
    waiting: list[BaseException | None] = [error]
    while waiting and len(found) < 50:
        current = waiting.pop()
        if current is not None and all(current is not seen for seen in found):
            found.append(current)
            waiting += [current.__cause__, current.__context__]
    return found


def test_no_token_or_secret_down_the_exception_chain(stub):
    tokens = MemoryTokenStore()
    api = make_api(stub, tokens, timeout=0.3)
    draft = article(api)
    token = tokens.load(stub.app_id)[0]
    stub.inject("draft/batchget", Fault.errcode(40164, f"ip refused for {stub.app_secret} {token}"),
                Fault.http_status(502), Fault.drop(), Fault.html_page(), Fault.slow(1.0))
    stub.inject("draft/add", Fault.lost_reply(), Fault.slow(1.0), Fault.http_status(404))
    errors = []
    for call in [lambda: api.list_drafts(0, 10)] * 5 + [lambda: api.add_draft([draft])] * 3:
        with pytest.raises(Exception) as caught:
            call()
        errors.append(caught.value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransientDeliveryError) as caught:
        make_api(stub, tokens, base_url=f"http://127.0.0.1:{port}/").list_drafts(0, 10)
    errors.append(caught.value)
    assert {type(e).__name__ for e in errors} == {"ChannelStoppedError", "PermanentDeliveryError",
                                                 "TransientDeliveryError", "UncertainDeliveryError"}
    for error in errors:
        shown = "".join(traceback.format_exception(error)) + "".join(
            f"{e} {e!r} {e.args!r} {getattr(e, 'reply', '')}" for e in chained(error))
        assert stub.app_secret not in shown and token not in shown, shown

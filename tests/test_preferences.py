"""The preferences page (the unsubscribe link's page for a reader of the subscriber store) over real HTTP
on 127.0.0.1, with a real ledger file."""
from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import pytest

from distributor.audience import unsubscribe
from distributor.ledger.store import Ledger
from distributor.ledger.subscribers import SubscriberStore
from distributor.settings import Settings, load_settings

from .conftest import UNSUBSCRIBE_SECRET
from .test_subscriber_commands import run
from .test_unsubscribe import one_click_multipart, one_click_urlencoded, request, running

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")
FORM = "application/x-www-form-urlencoded"
READER = "Reader@Example.org"


def settings_for(tmp_path: Path, language: str = "en") -> Settings:
    """Email sends weekly and news, text sends weekly and plain; the signup form also offers digest."""
    path = tmp_path / "settings.yaml"
    path.write_text(f"""site: {{language: {language}}}
channels:
  email: {{lists: [weekly, news]}}
  text: {{lists: [weekly, plain]}}
signup: {{lists: [digest]}}
ledger: {{path: {tmp_path / 'ledger.sqlite3'}}}
""", encoding="utf-8")
    return load_settings(path)


def store_reader(tmp_path: Path, lists: dict[str, tuple[str, str]], address: str = READER) -> str:
    """Put `address` in the store with {list: (status, format)}; return their unsubscribe token."""
    with Ledger(tmp_path / "ledger.sqlite3") as ledger, ledger.transaction():
        store = SubscriberStore(ledger)
        store.save(address, name="Reader", language="en")
        for list_name, (status, format) in lists.items():
            store.set_status(address, list_name, status, source="import", format=format)
        return unsubscribe.sign(ledger.subscriber_id(address), UNSUBSCRIBE_SECRET)


def standing(tmp_path: Path, address: str = READER) -> dict[str, tuple[str, str]]:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        found = SubscriberStore(ledger).subscriber(address)
        assert found is not None
        return {s.list: (s.status, s.format) for s in found.subscriptions}


def history(tmp_path: Path, address: str = READER) -> list[tuple[str, str, str]]:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        return [(change.list, change.status, change.source) for change in SubscriberStore(ledger).history(address)]


def suppression(tmp_path: Path, address: str = READER) -> tuple | None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        return ledger.suppression(address)


def checkboxes(page: str) -> dict[str, bool]:
    """Map each list checkbox of the page to whether it is ticked."""
    return {found[1]: bool(found[2]) for found in
            re.finditer(r'<input type="checkbox" name="list" value="([^"]+)"( checked)?>', page)}


def refused(page: str) -> list[str]:
    """The lists the page shows as not tickable: a checkbox with no name, disabled."""
    return re.findall(r'<input type="checkbox" value="([^"]+)" disabled>', page)


def radios(page: str) -> dict[str, tuple[list[str], str | None]]:
    """Map each list with a format choice to (its formats, the one checked)."""
    found: dict[str, tuple[list[str], str | None]] = {}
    for match in re.finditer(r'<input type="radio" name="format\.([^"]+)" value="([^"]+)"( checked)?>', page):
        formats, checked = found.get(match[1], ([], None))
        found[match[1]] = ([*formats, match[2]], match[2] if match[3] else checked)
    return found


def save(port: int, token: str, body: str | bytes, content_type: str = FORM) -> tuple[int, str]:
    data = body.encode() if isinstance(body, str) else body
    status, _, page = request(port, "POST", f"/unsubscribe/{token}", data, content_type)
    return status, page


def form(*ticked: str, **formats: str) -> str:
    pairs = [("list", name) for name in ticked] + [(f"format.{name}", value) for name, value in formats.items()]
    return urllib.parse.urlencode([*pairs, ("save", "preferences")])


def test_the_page_shows_every_list_ticked_where_active_and_a_get_changes_nothing(tmp_path):
    token = store_reader(tmp_path, {"weekly": ("active", "text"), "news": ("unconfirmed", "email"),
                                    "old": ("active", "email")})
    before = history(tmp_path)
    with running(settings_for(tmp_path)) as port:
        for _ in range(2):
            status, headers, page = request(port, "GET", f"/unsubscribe/{token}")
            assert status == 200 and headers["Cache-Control"] == "no-store"
            # Every list a channel sends, then the signup form's; unconfirmed is not ticked.
            assert checkboxes(page) == {"weekly": True, "news": False, "plain": False, "digest": False}
            # Only weekly is sent by two channels: the reader reads it as text.
            assert radios(page) == {"weekly": (["email", "text"], "text")}
            assert "@" not in page and "<script" not in page and not re.search(r"<form[^>]*action=", page)
            # The button that unsubscribes from everything is there as on every page.
            assert re.search(r'<form method="post"><button type="submit" name="confirm" value="unsubscribe">'
                             r"Unsubscribe</button></form>", page)
            assert '<button type="submit" name="save" value="preferences"' in page
    assert history(tmp_path) == before and suppression(tmp_path) is None


def test_saving_ticks_unticks_and_changes_formats_in_the_history(tmp_path):
    token = store_reader(tmp_path, {"weekly": ("active", "email"), "news": ("active", "email"),
                                    "digest": ("unconfirmed", "email")})
    with running(settings_for(tmp_path)) as port:
        status, page = save(port, token, form("weekly", weekly="text"))
        assert status == 200 and "Saved" in page
        assert checkboxes(page) == {"weekly": True, "news": False, "plain": False, "digest": False}
        assert radios(page)["weekly"] == (["email", "text"], "text")
        assert standing(tmp_path) == {"weekly": ("active", "text"), "news": ("unsubscribed", "email"),
                                      "digest": ("unsubscribed", "email")}
        status, page = save(port, token, form("weekly", "news", weekly="text"))
        assert status == 200 and checkboxes(page) == {"weekly": True, "news": True, "plain": False, "digest": False}
    assert standing(tmp_path) == {"weekly": ("active", "text"), "news": ("active", "email"),
                                  "digest": ("unsubscribed", "email")}
    # A format change alone is no history line; each status change is, from the page.
    assert history(tmp_path)[3:] == [("news", "unsubscribed", "preferences"), ("digest", "unsubscribed", "preferences"),
                                     ("news", "active", "preferences")]
    assert suppression(tmp_path) is None


def test_the_form_posted_as_multipart_carries_every_ticked_list(tmp_path):
    token = store_reader(tmp_path, {})
    parts = [("list", "weekly"), ("list", "news"), ("list", "plain"), ("list", "digest"), ("format.weekly", "text"),
             ("save", "preferences")]
    body = b"".join(f'--b0undary\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                    for name, value in parts) + b"--b0undary--\r\n"
    with running(settings_for(tmp_path)) as port:
        assert save(port, token, body, "multipart/form-data; boundary=b0undary")[0] == 200
    # A list one channel sends is read through it; one no channel sends yet keeps the default.
    assert standing(tmp_path) == {"news": ("active", "email"), "weekly": ("active", "text"),
                                  "plain": ("active", "text"), "digest": ("active", "email")}


@pytest.mark.parametrize("body", [
    form("weekly", "nosuchlist"), form("weekly", "Weekly"), form("weekly", weekly="fax"),
    form("weekly", news="text"),                    # news goes by email only: nothing to choose
    form("weekly", nosuchlist="email"),
    "list=weekly&format.weekly=email&format.weekly=text&save=preferences",
])
def test_a_list_or_format_the_page_does_not_offer_is_refused_and_changes_nothing(tmp_path, body):
    token = store_reader(tmp_path, {"weekly": ("active", "email"), "news": ("active", "email")})
    before = (standing(tmp_path), history(tmp_path))
    with running(settings_for(tmp_path)) as port:
        status, page = save(port, token, body)
        assert status == 400 and "nothing was changed" in page and "@" not in page
    assert (standing(tmp_path), history(tmp_path)) == before


def test_ticking_a_list_lifts_the_readers_own_unsubscribe(tmp_path):
    token = store_reader(tmp_path, {"weekly": ("active", "email"), "news": ("active", "email")})
    with running(settings_for(tmp_path)) as port:
        assert one_click_urlencoded(port, token)[0] == 200
        assert suppression(tmp_path)[2] == "one-click"
        assert standing(tmp_path) == {"weekly": ("unsubscribed", "email"), "news": ("unsubscribed", "email")}
        status, _, page = request(port, "GET", f"/unsubscribe/{token}")
        assert checkboxes(page) == {"weekly": False, "news": False, "plain": False, "digest": False}
        assert "cannot be mailed" not in page
        assert save(port, token, form("news"))[0] == 200
    assert suppression(tmp_path) is None
    assert standing(tmp_path) == {"weekly": ("unsubscribed", "email"), "news": ("active", "email")}
    assert history(tmp_path)[-3:] == [("news", "unsubscribed", "one-click"), ("weekly", "unsubscribed", "one-click"),
                                      ("news", "active", "preferences")]


@pytest.mark.parametrize("source", ["bounce", "complaint", "command"])
def test_a_suppression_the_reader_did_not_make_stays_and_the_page_says_so(tmp_path, source):
    token = store_reader(tmp_path, {"weekly": ("active", "email")})
    with Ledger(tmp_path / "ledger.sqlite3") as ledger, ledger.transaction():
        ledger.suppress(READER, reason="550 5.1.1 no such user", source=source)
    blocked = standing(tmp_path)
    with running(settings_for(tmp_path)) as port:
        page = request(port, "GET", f"/unsubscribe/{token}")[2]
        assert page.count("This address cannot be mailed at present") == 1
        status, page = save(port, token, form("weekly", "news", weekly="text"))
        assert status == 200 and "This address cannot be mailed at present" in page
    assert suppression(tmp_path)[2] == source
    # No list became active; the format the reader chose is kept for when mail resumes.
    assert standing(tmp_path) == {"weekly": (blocked["weekly"][0], "text")}


def test_a_list_that_bounced_or_complained_stays_so_when_ticked_and_the_page_says_so(tmp_path):
    token = store_reader(tmp_path, {"weekly": ("active", "email"), "news": ("active", "email"),
                                    "plain": ("complained", "text"), "digest": ("unsubscribed", "email")})
    with Ledger(tmp_path / "ledger.sqlite3") as ledger, ledger.transaction():
        ledger.suppress(READER, reason="550 5.1.1 no such user", source="bounce")
    settings = settings_for(tmp_path)
    # The publisher lifts the suppression for weekly only: news stays bounced with nothing behind it.
    assert run(tmp_path / "settings.yaml", "subscribers", "resubscribe", READER, "--list", "weekly")[0] == 0
    assert suppression(tmp_path) is None
    line = "This address cannot be mailed on this list"
    with running(settings) as port:
        page = request(port, "GET", f"/unsubscribe/{token}")[2]
        assert checkboxes(page) == {"weekly": True, "digest": False}
        assert refused(page) == ["news", "plain"] and page.count(line) == 2
        assert "cannot be mailed at present" not in page
        # A POST that ticks them anyway (an old page, a crafted request) leaves them as they are.
        status, page = save(port, token, form("weekly", "news", "plain", "digest", weekly="text"))
        assert status == 200 and "Saved" in page and refused(page) == ["news", "plain"]
        assert checkboxes(page) == {"weekly": True, "digest": True}
    # The list the reader had left is theirs to tick again; the format chosen is kept.
    assert standing(tmp_path) == {"weekly": ("active", "text"), "news": ("bounced", "email"),
                                  "plain": ("complained", "text"), "digest": ("active", "email")}
    assert history(tmp_path)[-1:] == [("digest", "active", "preferences")]
    assert ("news", "active", "preferences") not in history(tmp_path) and suppression(tmp_path) is None


def test_ticking_only_a_bounced_list_does_not_lift_the_readers_own_suppression(tmp_path):
    token = store_reader(tmp_path, {"weekly": ("bounced", "email"), "news": ("active", "email")})
    with running(settings_for(tmp_path)) as port:
        assert one_click_urlencoded(port, token)[0] == 200
        assert save(port, token, form("weekly"))[0] == 200
    # Nothing would be mailed: the reader's unsubscribe stays whole.
    assert suppression(tmp_path)[2] == "one-click"
    assert standing(tmp_path) == {"weekly": ("bounced", "email"), "news": ("unsubscribed", "email")}


def test_one_click_and_the_button_still_unsubscribe_a_store_reader_from_everything(tmp_path):
    one = store_reader(tmp_path, {"weekly": ("active", "text")}, "one@example.org")
    multi = store_reader(tmp_path, {"weekly": ("active", "email")}, "multi@example.org")
    button = store_reader(tmp_path, {"weekly": ("active", "email"), "news": ("unconfirmed", "email")},
                          "button@example.org")
    with running(settings_for(tmp_path, "zh")) as port:
        page = request(port, "GET", f"/unsubscribe/{button}")[2]
        assert "订阅设置" in page and "保存设置" in page and "> 纯文本</label>" in page and "格式：" in page
        field, value = re.search(r'<form method="post"><button type="submit" name="(\w+)" value="(\w+)"', page).groups()
        assert save(port, button, f"{field}={value}")[1].count("已退订") >= 1
        # One-click reads the first value of its field, as before the preferences form sent several.
        assert request(port, "POST", f"/unsubscribe/{one}", b"List-Unsubscribe=One-Click&List-Unsubscribe=No",
                       FORM)[0] == 200
        assert one_click_multipart(port, multi)[0] == 200
    for address, source in (("one@example.org", "one-click"), ("multi@example.org", "one-click"),
                            ("button@example.org", "page")):
        assert suppression(tmp_path, address)[2] == source
        assert {status for status, _ in standing(tmp_path, address).values()} == {"unsubscribed"}


def test_a_reader_outside_the_store_sees_the_page_as_before(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:      # a subscriber-file reader: an id, no store row
        token = unsubscribe.sign(ledger.subscriber_id("file.reader@example.org"), UNSUBSCRIBE_SECRET)
    store_reader(tmp_path, {"weekly": ("active", "email")})
    with running(settings_for(tmp_path)) as port:
        status, _, page = request(port, "GET", f"/unsubscribe/{token}")
        assert status == 200 and page.count("<form") == 1 and 'name="list"' not in page
        assert re.search(r'<form method="post"><button type="submit" name="confirm" value="unsubscribe">', page)
        # The preferences form's POST means nothing for them.
        status, page = save(port, token, form("weekly"))
        assert status == 400 and "nothing was changed" in page
    assert suppression(tmp_path, "file.reader@example.org") is None

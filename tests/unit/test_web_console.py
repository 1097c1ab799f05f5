"""The web console's pure parts: escaping in every page, the session cookie and its CSRF token."""

from __future__ import annotations

import time

from console.web import Session, csrf_token, seal, unseal
from console.web_pages import Safe, h, iso, link, search_page, table, worker_state

HOSTILE = "<script>alert(1)</script>\"'&"
PAYMENT = {
    "id": "11111111-1111-4111-8111-111111111111",
    "user_id": "22222222-2222-4222-8222-222222222222",
    "amount": 500,
    "currency": "USD",
    "payment_method_type": "wallet",
    "status": "completed",
    "description": HOSTILE,
    "created_at": "2026-01-01T00:00:00+00:00",
}


def test_a_description_holding_markup_is_shown_escaped() -> None:
    page = search_page("op", "csrf", {"status": HOSTILE}, [PAYMENT])
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;" in page
    assert f'href="/console/payments/{PAYMENT["id"]}"' in page  # the link itself is markup


def test_only_safe_markup_passes_unescaped() -> None:
    assert h(Safe("<b>x</b>")) == "<b>x</b>" and h("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"
    assert link('/x?a="1"', "<i>") == '<a href="/x?a=&quot;1&quot;">&lt;i&gt;</a>'
    assert "<td>&lt;td&gt;</td>" in table(["a"], [["<td>"]])


def test_epoch_milliseconds_of_the_worker_state_become_iso_8601() -> None:
    shown = worker_state({"created_at": 1_767_225_600_123, "amount": 1_767_225_600_123, "flag": True})
    assert "2026-01-01T00:00:00.123Z" in shown and "<td>1767225600123</td>" in shown
    assert iso(0) == "1970-01-01T00:00:00.000Z"


KEY = b"k" * 32


def test_a_session_cookie_opens_only_with_its_key_and_before_it_expires() -> None:
    session = Session("op", ["operator"], int(time.time()) + 900, "n1")
    cookie = seal(KEY, session)
    assert unseal(KEY, cookie, time.time()) == session
    assert unseal(b"x" * 32, cookie, time.time()) is None
    assert unseal(KEY, cookie, time.time() + 901) is None
    signature = cookie.partition(".")[2]
    forged = seal(b"x" * 32, Session("op", ["admin"], session.expires, "n1")).partition(".")[0]
    assert unseal(KEY, f"{forged}.{signature}", time.time()) is None
    assert unseal(KEY, "", time.time()) is None and unseal(KEY, "garbage", time.time()) is None


def test_the_csrf_token_belongs_to_one_session() -> None:
    one = Session("op", ["operator"], 1, "n1")
    other = Session("op", ["operator"], 1, "n2")
    assert csrf_token(KEY, one) == csrf_token(KEY, one) != csrf_token(KEY, other)

"""The operators' web console in a real headless browser (Debian's chromium through Selenium),
reached through the gateway as an operator would: log in, search, open a payment and its
timeline; a user is refused. CONSOLE_SCREENSHOTS=docs/console also saves each page there."""

from __future__ import annotations

import base64
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from connectors.auth import issue_token
from connectors.config import Config
from connectors.log_reader import partition_for
from connectors.topics import PAYMENT_REFUNDED, WALLET_MOVEMENT_REQUIRED
from devtools.chromium import ChromiumMissing
from devtools.chromium import install as install_chromium
from devtools.devctl import Supervisor
from domain.events import EventMeta
from domain.money import Money
from domain.payment import PaymentRefunded
from streams.envelope import to_record
from streams.processing import Processor, SourceMessage
from tests.conftest import ensure_running
from tests.integration.conftest import MoneyWitness
from tests.integration.kafka_helpers import codec
from tests.integration.test_payment_service import new_wallet, payment_in, wallet_balance, wallet_payment
from tests.integration.test_wallet_service import movement_command
from tests.support import Api, eventually
from tests.support.audit import auditor_get
from tests.support.kafka import plant

BROWSER_OPTIONS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)
HOSTILE = "<script>alert('console')</script> & <b>bold</b>"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Chromium driven through Debian's chromedriver; installed if missing (as root, with apt)."""
    try:
        chromium, chromedriver = install_chromium()
    except ChromiumMissing as exc:
        if os.environ.get("CI") == "true":
            raise  # a CI run must exercise the browser, not skip it
        pytest.skip(str(exc))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for option in BROWSER_OPTIONS:
        options.add_argument(option)
    with tempfile.TemporaryDirectory(prefix="console-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        # An explicit driver path: Selenium Manager never looks for (or downloads) one.
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        driver.set_page_load_timeout(60)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def console(payment_system: Config, supervisor: Supervisor) -> str:
    """The console's base URL on the gateway."""
    ensure_running(payment_system, supervisor, "gateway", "web-console")
    return f"http://127.0.0.1:{payment_system.gateway.port}/console"


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    """The whole page (beyond the window) as docs/console/NAME.png, when CONSOLE_SCREENSHOTS names the folder."""
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder:
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


def click_through(driver: webdriver.Chrome, element: WebElement) -> None:
    """Click a link or a submit button and wait for the page it leads to: a click returns before
    the navigation it starts has replaced the page, and the next lookup could read the old one."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 30).until(replaced(page))


def replaced(page: WebElement) -> Callable[[webdriver.Chrome], bool]:
    """`staleness_of`, also when chromium is caught halfway through the swap: it then answers
    "Node with given id does not belong to the document" instead of a stale element."""

    def gone(_: webdriver.Chrome) -> bool:
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return gone


def log_in(driver: webdriver.Chrome, console: str, credential: str) -> None:
    driver.delete_all_cookies()
    driver.get(console + "/")
    assert driver.current_url.endswith("/console/login"), "without a session the console sends to its login"
    driver.find_element(By.ID, "credential").send_keys(credential)
    click_through(driver, driver.find_element(By.ID, "login"))


def timeline_rows(driver: webdriver.Chrome) -> list[str]:
    return [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#timeline tr")[1:]]


async def test_an_operator_logs_in_searches_and_opens_a_payments_timeline(
    payment_system: Config, payment_api: Api, wallet_api: Api, browser: webdriver.Chrome, console: str
) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 5_000)
    status, created = await payment_api.post(
        "/api/v1/payments", {**wallet_payment(user_id, wallet_id, 1_200), "description": HOSTILE}
    )
    assert status in (201, 202), created
    payment_id = created["id"]
    await payment_in(payment_api, payment_id, "completed")

    browser.get(console + "/login")
    screenshot(browser, "login")
    log_in(browser, console, issue_token(payment_system.auth, "console-operator", ["operator"]))
    assert browser.current_url.endswith("/console/")
    screenshot(browser, "search")

    browser.find_element(By.ID, "user_id").send_keys(user_id)
    click_through(browser, browser.find_element(By.ID, "search"))
    assert f"user_id={user_id}" in browser.current_url
    results = browser.find_elements(By.CSS_SELECTOR, "table tr")[1:]
    assert [row.find_element(By.TAG_NAME, "a").text for row in results] == [payment_id]
    # The description is shown as the text it is: no element of it became markup.
    assert HOSTILE in results[0].text
    assert browser.find_elements(By.TAG_NAME, "script") == [] and browser.find_elements(By.TAG_NAME, "b") == []

    click_through(browser, results[0].find_element(By.TAG_NAME, "a"))
    assert browser.current_url.endswith(f"/console/payments/{payment_id}")
    rows = timeline_rows(browser)
    assert any("PaymentCreated" in row for row in rows), rows
    assert any("PaymentSucceeded" in row or "PaymentCompleted" in row for row in rows), rows
    assert len(rows) >= 4, rows
    # Times in ISO 8601; each row after the first says how long after the previous one it came.
    assert all(row[:4].isdigit() and row[10] == "T" for row in rows), rows
    assert all("+" in row.split(" ", 2)[1] for row in rows[1:]), rows
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "Live saga state" in page and "did not answer" not in page and "no state" not in page, page
    screenshot(browser, "payment")

    click_through(browser, browser.find_element(By.LINK_TEXT, wallet_id))
    wallet_page = browser.find_element(By.TAG_NAME, "main").text
    assert "3800" in wallet_page  # 5000 - 1200
    assert "Live state (wallet worker)" in wallet_page and "did not answer" not in wallet_page, wallet_page
    screenshot(browser, "wallet")

    event_link = browser.find_elements(By.CSS_SELECTOR, "table a[href*='/console/payments/']")
    assert event_link, "the wallet's movement links to its payment"
    browser.get(console + "/payments/" + payment_id)
    click_through(browser, browser.find_element(By.CSS_SELECTOR, "#timeline a"))
    assert "/console/events/" in browser.current_url and "age" in browser.find_element(By.TAG_NAME, "main").text
    screenshot(browser, "event")

    for page_name in ("dlq", "violations", "health"):
        browser.get(f"{console}/{page_name}")
        assert browser.find_elements(By.TAG_NAME, "table"), page_name
        screenshot(browser, page_name)


async def test_a_user_is_refused_with_a_page_saying_why(
    payment_system: Config, browser: webdriver.Chrome, console: str
) -> None:
    log_in(browser, console, issue_token(payment_system.auth, "console-user", ["user"]))
    refusal = browser.find_element(By.ID, "forbidden").text
    assert "console-user" in refusal and "operators and admins" in refusal
    screenshot(browser, "refused")
    browser.get(console + "/")
    assert browser.current_url.endswith("/console/login"), "a refused user has no session"


async def test_the_session_cookie_is_http_only_strict_and_a_post_needs_its_csrf_token(
    payment_system: Config, console: str
) -> None:
    token = issue_token(payment_system.auth, "console-operator", ["operator"])
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(console + "/login", data={"credential": token}, allow_redirects=False) as answer:
            assert answer.status == 303 and answer.headers["Location"] == "/console/"
            cookie = answer.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console/" in cookie
        lifetime = int(cookie.split("Max-Age=")[1].split(";")[0])
        assert lifetime == payment_system.web_console.session_ttl_s
        async with http.post(console + "/dlq/replay", data={"partition": "0", "offset": "0"}) as refused:
            assert refused.status == 403 and "CSRF" in await refused.text()
        async with http.get(console + "/payments/not-a-uuid") as bad:
            assert bad.status == 400 and "payment_id must be a UUID" in await bad.text()
        async with http.get(f"{console}/?status={quote('<i>x</i>')}") as escaped:
            assert "&lt;i&gt;x&lt;/i&gt;" in await escaped.text()
    async with aiohttp.ClientSession() as stranger:
        forged = f"console_session=e30.{uuid.uuid4().hex}"
        async with stranger.get(console + "/", headers={"Cookie": forged}, allow_redirects=False) as answer:
            assert answer.status == 303 and answer.headers["Location"] == "/console/login"


async def dead_letter_for(config: Config, wallet_id: str, amount: int) -> int:
    """A wallet income dead-lettered as if the worker gave up during an outage; its source offset."""
    source_offset = 10**12 + uuid.uuid4().int % 10**9

    async def send(topic: str, key: bytes | None, record: dict) -> None:
        await plant(config, [(topic, key, codec.encode(record))])

    source = SourceMessage(
        WALLET_MOVEMENT_REQUIRED.name,
        partition_for(wallet_id, config.kafka.partitions),
        source_offset,
        wallet_id.encode(),
        codec.encode(movement_command(wallet_id, "income", amount)),
    )
    await Processor("web-console-test", codec.decode, send).dead_letter(source, ConnectionError("outage"), 3)
    return source_offset


async def forged_refund(config: Config, payment_id: str, amount: int) -> None:
    """A refund that moved no money, written by a payment worker gone wrong: the auditor names it."""
    meta = EventMeta(str(uuid.uuid4()), int(time.time() * 1000), payment_id, None)
    money = Money(amount, "USD")
    forged = PaymentRefunded(meta, payment_id, str(uuid.uuid4()), money, money, "refunded")
    await plant(config, [(PAYMENT_REFUNDED.name, payment_id.encode(), codec.encode(to_record(forged)))])


async def test_an_operator_replays_a_dead_letter_and_opens_a_violations_event(
    payment_system: Config,
    money_witness: MoneyWitness,
    payment_api: Api,
    wallet_api: Api,
    browser: webdriver.Chrome,
    console: str,
) -> None:
    wallet_id, user_id = await new_wallet(wallet_api, 1_000)
    source_offset = await dead_letter_for(payment_system, wallet_id, 700)
    status, paid = await payment_api.post("/api/v1/payments", wallet_payment(user_id, wallet_id, 400))
    assert status == 201 and paid["status"] == "completed", paid
    money_witness.planted.add(paid["id"])
    await forged_refund(payment_system, paid["id"], 400)

    log_in(browser, console, issue_token(payment_system.auth, "console-operator", ["operator"]))
    browser.get(console + "/dlq")
    letter = next(r for r in browser.find_elements(By.CSS_SELECTOR, "table tr") if f"@{source_offset}" in r.text)
    assert "ConnectionError: outage" in letter.text and "MovementRequired" in letter.text
    screenshot(browser, "dlq")
    click_through(browser, letter.find_element(By.TAG_NAME, "button"))  # a POST carrying the page's CSRF token
    assert "replayed [" in browser.find_element(By.ID, "outcome").text
    assert await wallet_balance(wallet_api, wallet_id, 1_000 - 400 + 700) == 1_300

    async def reported() -> bool:
        return any(v["subject"] == paid["id"] for v in await auditor_get(payment_system, "/violations"))

    await eventually(reported, timeout=15, what="the auditor to report the forged refund")
    browser.get(console + "/violations")
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "table tr") if paid["id"] in r.text)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z .* ago ", row.text), row.text
    screenshot(browser, "violations")
    click_through(browser, row.find_element(By.CSS_SELECTOR, "a[href*='/console/events/payment.refunded/']"))
    event = browser.find_element(By.TAG_NAME, "main").text
    assert "PaymentRefunded" in event and paid["id"] in event and "ago" in event, event

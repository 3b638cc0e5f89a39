"""The dashboard in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``).

A real ``statekit serve`` with an API key on a SQLite store (seeded with a balance, a
portfolio and two intents, one after a reconcile pass on the paper exchange) is driven
through Selenium as a user would: sign in, watch a position POSTed through the REST API
appear without a reload, read its history diff, drop the WebSocket and see the missed
change replayed on reconnect (``since``), take a snapshot and restore it after the
confirm step, and finish with no error in the browser's console. The screenshots in
docs/dashboard.md are made here (docs/images/dashboard-*.png).

The browser comes from scripts/browser.sh (``make test`` runs it); the driver is named
by path, so Selenium Manager never downloads anything. Without a browser the test skips
locally with a message, and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver  # the dev extra: make install has it
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

import statekit
from statekit.trading import OrderSide
from statekit.trading.models import Balance, Order, OrderStatus, Portfolio
from statekit.trading.reconcile import IntentStore
from statekit.trading.state import TradingState

from ..conftest import REPO
from .conftest import (
    API_KEY,
    RECONCILE_SYMBOL,
    Served,
    browser_paths,
    buy,
    one_pass,
    running_server,
)

pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py

IMAGES = REPO / "docs" / "images"
"""Where ``make screenshots`` (STATEKIT_SCREENSHOTS=1) writes the docs' screenshots; other
runs write them to the test's temp folder, so ``make test`` leaves the tree unchanged."""
TO_DOCS = os.environ.get("STATEKIT_SCREENSHOTS") == "1"  # read before `isolated` clears it
WAIT_SECONDS = 15.0
"""How long a page may take to show what the test waits for (a hung page fails)."""
SYMBOL = RECONCILE_SYMBOL


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    binary, driver_path = browser_paths()
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not go online either
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1360,1000",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


async def _seed(url: str) -> None:
    """A balance, a portfolio, intent i1 after one engine pass (resting) and i2 unseen."""
    async with await statekit.open(url) as store:
        trading = TradingState(store)
        await trading.balances.save(Balance(asset="USDT", free=Decimal("10000")), by="seed")
        await trading.balances.save(
            Balance(asset="USDT", free=Decimal("9000"), locked=Decimal("1000")),
            by="seed",
            note="order placed",
        )
        await trading.orders.save(
            Order(
                id="o-1",
                symbol=SYMBOL,
                side=OrderSide.SELL,
                amount=Decimal("0.5"),
                price=Decimal("120"),
                status=OrderStatus.OPEN,
            )
        )
        await trading.save_portfolio(
            Portfolio(total_value=Decimal("10000"), cash=Decimal("9000"), currency="USDT")
        )
        intents = IntentStore(store)

        await intents.create("i1", buy("90"))
        await one_pass(store)
        await intents.create("i2", buy("80"))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    url = f"sqlite:///{tmp_path / 'dashboard.db'}"
    asyncio.run(_seed(url))
    with running_server(url, tmp_path, api_key=API_KEY) as server:
        yield server


def _position(http: httpx.Client, amount: str, note: str, by: str) -> None:
    body = {
        "state_id": "position/ETH-USD",
        "state_type": "trading.position",
        "data": {"symbol": "ETH-USD", "amount": amount, "entry_price": "2000"},
        "description": note,
        "user_id": by,
    }
    assert http.post("/states", json=body).status_code == 201


def _shown(page: WebDriver, css: str) -> Any:
    return WebDriverWait(page, WAIT_SECONDS).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, css))
    )


def _text_in(page: WebDriver, css: str, text: str) -> None:
    WebDriverWait(page, WAIT_SECONDS).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text)
    )


def _go(page: WebDriver, hash_: str, view: str) -> None:
    page.execute_script("location.hash = arguments[0]", hash_)
    _shown(page, view)


def _screenshot(page: WebDriver, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.save_screenshot(str(folder / f"dashboard-{name}.png"))


def test_the_dashboard_in_a_real_browser(
    browser: WebDriver, served: Served, tmp_path: Path
) -> None:
    shots = IMAGES if TO_DOCS else tmp_path
    page, http = browser, served.client()
    page.get(served.url + "/")

    # Sign in: the key goes to sessionStorage, never into the URL.
    _shown(page, "#login-form").find_element(By.ID, "api-key").send_keys(API_KEY)
    page.find_element(By.CSS_SELECTOR, "#login-form button").click()
    _shown(page, "#view-overview")
    _text_in(page, "#live", "live")
    assert API_KEY not in page.current_url
    assert page.execute_script("return sessionStorage.getItem('statekit.apiKey')") == API_KEY

    # A position POSTed through the REST API appears live, without a reload.
    page.execute_script("window.notReloaded = true")
    _position(http, "1.5", "opened", "alice")
    _shown(page, '#positions tr[data-symbol="ETH-USD"]')
    _text_in(page, "#changes", "position/ETH-USD v1")
    assert page.execute_script("return window.notReloaded") is True
    _screenshot(page, shots, "overview")

    _go(page, "#reconciliation", "#view-reconciliation")
    condition = http.get("/reconcile/intents/i1").json()["condition"]
    assert condition in ("InSync", "Pending")  # the engine placed its order
    _text_in(page, '#intents tr[data-intent="i1"]', condition)
    _text_in(page, '#intents tr[data-intent="i2"]', "not seen")
    _screenshot(page, shots, "reconciliation")

    # A snapshot through the dashboard's form, then the position moves on.
    _go(page, "#snapshots", "#view-snapshots")
    page.find_element(By.NAME, "description").send_keys("before scaling in")
    page.find_element(By.CSS_SELECTOR, "#snapshot-form button").click()
    _text_in(page, "#snapshots", "before scaling in")
    _position(http, "3", "scaled in", "bob")

    # The key page: the history diff shows the change with who and why, live.
    _go(page, "#key=position/ETH-USD", "#view-key")
    _text_in(page, '#history li[data-version="2"]', "scaled in")
    newest = page.find_element(By.CSS_SELECTOR, '#history li[data-version="2"]')
    assert "bob" in newest.text
    assert newest.find_element(By.CSS_SELECTOR, "tr.changed td.before").text == '"1.5"'
    assert newest.find_element(By.CSS_SELECTOR, "tr.changed td.after").text == '"3"'
    _position(http, "2", "trimmed", "carol")
    _text_in(page, '#history li[data-version="3"]', "trimmed")
    _shown(page, 'figure.chart[data-field="amount"]')

    # Drop the feed, miss a change, come back: it is replayed from `since`.
    page.execute_script("statekitDashboard.disconnect()")
    _text_in(page, "#live", "offline")
    _position(http, "2.5", "while away", "dave")
    page.execute_script("statekitDashboard.reconnect()")
    _shown(page, '#changes li.replayed[data-key="position/ETH-USD"][data-version="4"]')
    _text_in(page, "#changes", "resumed: 1 missed change(s) replayed")
    _text_in(page, '#history li[data-version="4"]', "while away")
    _screenshot(page, shots, "key-history")

    # A balance over time, and time travel to the moment before its order was placed.
    _go(page, "#key=balance/USDT", "#view-key")
    _shown(page, 'figure.chart[data-field="locked"]')
    page.find_element(By.CSS_SELECTOR, '#history li[data-version="1"] a[hx-get]').click()
    _text_in(page, "#as-of", "version 1")

    # Restore the snapshot: a confirm step shows what would change, then it is done.
    _go(page, "#snapshots", "#view-snapshots")
    page.find_element(By.CSS_SELECTOR, "#snapshots .restore-button").click()
    _text_in(page, "#restore-confirm", "position/ETH-USD")
    assert http.get("/states/position/ETH-USD").json()["data"]["amount"] == "2.5"
    _screenshot(page, shots, "snapshots")
    page.find_element(By.ID, "confirm-restore").click()
    _text_in(page, "#restored", "got a new version")
    assert http.get("/states/position/ETH-USD").json()["data"]["amount"] == "1.5"
    _text_in(page, "#changes", "position/ETH-USD v5")

    problems = [e for e in page.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert problems == [], problems
    assert "Traceback" not in served.output()
    assert os.environ.get("SE_OFFLINE") == "true"

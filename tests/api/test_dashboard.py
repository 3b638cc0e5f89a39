"""The dashboard over HTTP and WebSocket: what loads without the key, what needs it, bad
input in the API's error shape, the browser's way to send the key on ``/ws``, and the
pure helpers behind the key page (diffs, series, charts).

The pages run in a real ``statekit serve`` with an API key (``keyed_server``); the
real browser test is tests/api/test_dashboard_browser.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from statekit.api.dashboard.charts import step_chart
from statekit.api.dashboard.history import Change, changes, numeric_series, timeline
from statekit.backend import Record

from .conftest import Served

FRAGMENTS = [
    "/dashboard/overview",
    "/dashboard/reconciliation",
    "/dashboard/keys",
    "/dashboard/snapshots",
    "/dashboard/key?state_id=anything",
    "/dashboard/snapshots/diff?snapshot_id=s",
]


def test_the_shell_and_its_assets_load_without_the_key(keyed_server: Served) -> None:
    anonymous = keyed_server.client(auth=False)
    shell = anonymous.get("/")
    assert shell.status_code == 200
    assert shell.headers["content-type"].startswith("text/html")
    assert 'id="login-form" method="post"' in shell.text
    assert 'data-key-required="true"' in shell.text
    assert keyed_server.api_key is not None and keyed_server.api_key not in shell.text
    for asset in (
        "/dashboard/static/dashboard.js",
        "/dashboard/static/dashboard.css",
        "/dashboard/static/vendor/htmx/htmx.min.js",
        "/dashboard/static/vendor/htmx/LICENSE",
    ):
        assert anonymous.get(asset).status_code == 200, asset
    # Only GET is public there: the shell takes no writes.
    assert anonymous.post("/").status_code == 401


@pytest.mark.parametrize("path", FRAGMENTS)
def test_every_fragment_needs_the_key(keyed_server: Served, path: str, error: Any) -> None:
    refused = keyed_server.client(auth=False).get(path)
    assert refused.status_code == 401
    assert error(refused)["code"] == "unauthorized"


def test_fragments_render_with_the_key(keyed_server: Served, sid: str) -> None:
    client = keyed_server.client()
    body = {"state_type": "trading.position", "user_id": "alice", "description": "opened"}
    for amount in ("1", "2.5"):
        data = {"symbol": sid, "amount": amount}
        answer = client.post("/states", json={**body, "state_id": f"position/{sid}", "data": data})
        assert answer.status_code == 201
    overview = client.get("/dashboard/overview")
    assert overview.status_code == 200
    assert f'data-symbol="{sid}"' in overview.text
    page = client.get("/dashboard/key", params={"state_id": f"position/{sid}"})
    assert page.status_code == 200
    assert "alice" in page.text and "opened" in page.text
    assert '"1"' in page.text and '"2.5"' in page.text  # the diff of v2
    assert 'data-field="amount"' in page.text  # the chart
    for path in ("/dashboard/reconciliation", "/dashboard/keys", "/dashboard/snapshots"):
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({}, 422),
        ({"state_id": ""}, 422),
        ({"state_id": "x" * 513}, 422),
        ({"state_id": "no/such/key"}, 404),
        ({"state_id": "_sk/ws/start"}, 404),
        ({"state_id": "position/x", "as_of": "yesterday"}, 422),
    ],
)
def test_bad_key_page_input_gets_the_error_shape(
    keyed_server: Served, params: dict[str, str], status: int, error: Any
) -> None:
    answer = keyed_server.client().get("/dashboard/key", params=params)
    assert answer.status_code == status
    assert error(answer)["message"]


def test_bad_snapshot_input_gets_the_error_shape(keyed_server: Served, error: Any) -> None:
    client = keyed_server.client()
    for path in ("/dashboard/snapshots/diff", "/dashboard/snapshots/restore"):
        missing = client.get(path, params={"snapshot_id": "no-such-snapshot"})
        assert missing.status_code == 404
        assert error(missing)["code"] == "not_found"
    restore = client.post("/dashboard/snapshots/restore", params={"snapshot_id": "nope"})
    assert restore.status_code == 404
    reserved = client.post("/dashboard/snapshots", content=b"prefix=_sk/x")
    assert reserved.status_code == 422
    assert error(reserved)["code"]


def test_a_snapshot_taken_and_restored_through_the_dashboard(
    keyed_server: Served, sid: str
) -> None:
    client = keyed_server.client()
    key = f"{sid}/value"
    client.post("/states", json={"state_id": key, "state_type": "note", "data": {"n": 1}})
    taken = client.post("/dashboard/snapshots", content=f"description=d&prefix={sid}/".encode())
    assert taken.status_code == 200 and sid in taken.text
    listed = client.get("/snapshots").json()["items"]
    snapshot_id = next(s["snapshot_id"] for s in listed if s["prefix"] == sid + "/")
    client.post("/states", json={"state_id": key, "state_type": "note", "data": {"n": 2}})
    confirm = client.get("/dashboard/snapshots/restore", params={"snapshot_id": snapshot_id})
    assert 'id="confirm-restore"' in confirm.text and key in confirm.text
    # What the restore would do, in its direction: the live value (2) gives way to the snapshot's.
    was, becomes = confirm.text.split('class="before">')[1].split('class="after">')
    assert "2" in was.split("</td>")[0] and "1" in becomes.split("</td>")[0], confirm.text
    assert client.get(f"/states/{key}").json()["data"] == {"n": 2}  # asking changes nothing
    done = client.post("/dashboard/snapshots/restore", params={"snapshot_id": snapshot_id})
    assert done.status_code == 200 and 'id="restored"' in done.text
    assert client.get(f"/states/{key}").json()["data"] == {"n": 1}


def _key_protocol(key: str) -> str:
    return "statekit.key." + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


async def _subscribe(url: str, protocols: list[str]) -> tuple[str | None, dict[str, Any]]:
    async with connect(url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"action": "subscribe", "topic": "keys:dash/"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        return ws.subprotocol, reply


def test_a_browser_sends_the_key_as_a_websocket_subprotocol(keyed_server: Served) -> None:
    assert keyed_server.api_key is not None
    protocols = ["statekit", _key_protocol(keyed_server.api_key)]
    selected, reply = asyncio.run(_subscribe(keyed_server.ws_url, protocols))
    assert selected == "statekit"  # never the key itself
    assert reply == {"type": "subscribed", "topic": "keys:dash/"}


@pytest.mark.parametrize("offered", ["statekit.key.d3Jvbmc", "statekit.key.%%%", "statekit"])
def test_a_wrong_subprotocol_key_is_refused(keyed_server: Served, offered: str) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        asyncio.run(_subscribe(keyed_server.ws_url, ["statekit", offered]))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


# -- the key page's helpers -------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _record(version: int, data: Any, **meta: Any) -> Record:
    return Record("position/X", version, "trading.position", data, meta, T0 + timedelta(version))


def test_changes_name_every_leaf_that_differs() -> None:
    before = {"amount": "1", "legs": [{"id": "a"}], "gone": True}
    after = {"amount": "2", "legs": [{"id": "a"}, {"id": "b"}], "new": None}
    assert changes(before, after) == [
        Change("amount", "changed", "1", "2"),
        Change("gone", "removed", True, None),
        Change("legs.1.id", "added", None, "b"),
        Change("new", "added", None, None),
    ]
    assert changes({"a": 1}, {"a": 1}) == []
    assert changes(None, 5) == [Change("", "added", None, 5)]
    assert changes(3, 5) == [Change("", "changed", 3, 5)]


def test_the_timeline_diffs_each_version_with_the_one_before() -> None:
    records = [
        _record(3, None, by="carol"),
        _record(2, {"amount": "2"}, note="scaled in", by="bob"),
        _record(1, {"amount": "1"}, description="opened"),
    ]
    newest, middle, oldest = timeline(records)
    assert newest.by == "carol" and newest.changes == [Change("amount", "removed", "2", None)]
    assert middle.description == "scaled in"
    assert middle.changes == [Change("amount", "changed", "1", "2")]
    assert oldest.first and oldest.description == "opened"
    assert oldest.changes == [Change("amount", "added", None, "1")]
    # A page that starts after version 1 shows no diff for its oldest version.
    assert timeline([_record(5, {"a": 1})])[0].changes == []


def test_numeric_series_and_the_chart() -> None:
    records = [
        _record(3, {"amount": "-1.5", "symbol": "X", "free": 4, "fee": 1}),
        _record(2, None),
        _record(1, {"amount": "2", "symbol": "X", "price": "NaN", "fee": 1.0}),
    ]
    series = numeric_series(records)
    # free has one point, price is not finite, fee never moved
    assert list(series) == ["amount"]
    assert [v for _, v in series["amount"]] == [Decimal("2"), Decimal("-1.5")]
    chart = step_chart("amount", series["amount"])
    assert (chart.low, chart.high) == ("-1.5", "2")
    # A staircase: the first value holds until the second one's time.
    assert len(chart.points.split()) == 3 and len(chart.markers) == 2

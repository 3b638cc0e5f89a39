"""Beyond the seed: ETag/If-Match, paging, as_of, delete, snapshots, views, statistics.

All against a real ``statekit serve`` process on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

Listing = dict[str, tuple[str, int]]


def put(client: httpx.Client, state_id: str, data: Any, **headers: str) -> httpx.Response:
    body = {"state_id": state_id, "state_type": "position", "data": data}
    return client.post("/states", json=body, headers=headers)


def etag(version: int) -> str:
    return f'"{version}"'


def test_versions_and_etags_grow_by_one(client: httpx.Client, sid: str) -> None:
    versions = []
    for qty in range(1, 4):
        response = put(client, sid, {"qty": qty})
        assert response.status_code == 201, response.text
        versions.append(response.json()["version"])
        assert response.headers["etag"] == etag(versions[-1])
    assert versions == [1, 2, 3]
    got = client.get(f"/states/{sid}")
    assert got.headers["etag"] == etag(3)
    assert got.json()["data"] == {"qty": 3}


def test_if_match_conflict_is_412_and_writes_nothing(
    client: httpx.Client, sid: str, error: Callable[[httpx.Response], dict[str, Any]]
) -> None:
    assert put(client, sid, {"qty": 1}).status_code == 201
    for stale in (etag(2), etag(7), etag(0)):
        response = put(client, sid, {"qty": 2}, **{"If-Match": stale})
        assert response.status_code == 412, (stale, response.text)
        assert error(response)["code"] == "precondition_failed"
    got = client.get(f"/states/{sid}")
    assert got.json()["version"] == 1
    assert got.json()["data"] == {"qty": 1}

    ok = put(client, sid, {"qty": 2}, **{"If-Match": etag(1)})
    ok_again = put(client, sid, {"qty": 3}, **{"If-Match": ok.headers["etag"]})
    assert (ok.status_code, ok_again.status_code) == (201, 201), (ok.text, ok_again.text)
    assert ok_again.json()["version"] == 3


def test_two_writers_with_the_same_etag_one_wins(client: httpx.Client, sid: str) -> None:
    seen = put(client, sid, {"qty": 1}).headers["etag"]
    first = put(client, sid, {"qty": "a"}, **{"If-Match": seen})
    second = put(client, sid, {"qty": "b"}, **{"If-Match": seen})
    assert (first.status_code, second.status_code) == (201, 412)
    assert client.get(f"/states/{sid}").json()["data"] == {"qty": "a"}


def test_missing_state_is_404(
    client: httpx.Client, sid: str, error: Callable[[httpx.Response], dict[str, Any]]
) -> None:
    response = client.get(f"/states/{sid}")
    assert response.status_code == 404
    error(response)
    assert client.get(f"/states/{sid}/history").status_code in {200, 404}


def test_state_ids_with_slashes(client: httpx.Client, sid: str) -> None:
    state_id = f"{sid}/BTC-USD/binance"
    assert put(client, state_id, {"qty": 1}).status_code == 201
    got = client.get(f"/states/{state_id}")
    assert got.status_code == 200, got.text
    assert got.json()["state_id"] == state_id
    history = client.get(f"/states/{state_id}/history")
    assert [i["version"] for i in history.json()["items"]] == [1]


def test_history_pages_newest_first(client: httpx.Client, sid: str) -> None:
    for qty in range(1, 6):
        put(client, sid, {"qty": qty})
    seen: list[int] = []
    before: int | None = None
    for _ in range(10):
        params: dict[str, int] = {"limit": 2}
        if before is not None:
            params["before"] = before
        page = client.get(f"/states/{sid}/history", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["state_id"] == sid
        assert len(body["items"]) <= 2
        seen += [item["version"] for item in body["items"]]
        before = body["next_before"]
        if before is None:
            break
    assert seen == [5, 4, 3, 2, 1]


def test_listing_pages_with_a_cursor(client: httpx.Client, sid: str) -> None:
    ids = [f"{sid}-{i}" for i in range(5)]
    for state_id in reversed(ids):
        put(client, state_id, {"i": state_id})
    client.post("/states", json={"state_id": f"{sid}-o", "state_type": "order", "data": {}})
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, str | int] = {"prefix": sid, "state_type": "position", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/states", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 2
        seen += [item["state_id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == ids, "each state once, in id order, only the asked type"


def test_as_of_reads_the_version_current_then(client: httpx.Client, sid: str) -> None:
    put(client, sid, {"qty": 1})
    put(client, sid, {"qty": 2})
    items = client.get(f"/states/{sid}/history").json()["items"]
    first = next(i for i in items if i["version"] == 1)
    at = first.get("timestamp") or first["at"]

    then = client.get(f"/states/{sid}", params={"as_of": at})
    assert then.status_code == 200, then.text
    assert then.json()["version"] == 1
    assert then.json()["data"] == {"qty": 1}
    before_it = client.get(f"/states/{sid}", params={"as_of": "2000-01-01T00:00:00Z"})
    assert before_it.status_code == 404
    bad = client.get(f"/states/{sid}", params={"as_of": "yesterday"})
    assert bad.status_code in {400, 422}


def test_delete_with_if_match(
    client: httpx.Client,
    sid: str,
    stored: Callable[[httpx.Client], Listing],
    error: Callable[[httpx.Response], dict[str, Any]],
) -> None:
    put(client, sid, {"qty": 1})
    put(client, sid, {"qty": 2})
    stale = client.delete(f"/states/{sid}", headers={"If-Match": etag(1)})
    assert stale.status_code == 412
    error(stale)
    assert sid in stored(client)

    gone = client.delete(f"/states/{sid}", headers={"If-Match": etag(2)})
    assert gone.status_code in {200, 204}, gone.text
    assert client.get(f"/states/{sid}").status_code == 404
    assert sid not in stored(client)
    history = client.get(f"/states/{sid}/history").json()["items"]
    assert [i["version"] for i in history] == [3, 2, 1], "the history stays, with a tombstone"
    assert client.delete(f"/states/{sid}").status_code == 404


def test_unknown_state_type_on_get_is_404_and_changes_nothing(
    client: httpx.Client,
    sid: str,
    stored: Callable[[httpx.Client], Listing],
    error: Callable[[httpx.Response], dict[str, Any]],
) -> None:
    put(client, sid, {"qty": 1})
    before = stored(client)
    response = client.get(f"/states/{sid}", params={"state_type": "no_such_type"})
    assert response.status_code == 404
    error(response)
    assert stored(client) == before


def test_snapshot_restore_and_diff(client: httpx.Client, sid: str) -> None:
    kept, changed, added = f"{sid}-kept", f"{sid}-changed", f"{sid}-added"
    put(client, kept, {"qty": 1})
    put(client, changed, {"qty": 1})
    snap = f"snap-{sid}"
    created = client.post("/snapshots", json={"snapshot_id": snap, "description": "before"})
    assert created.status_code == 201, created.text
    again = client.post("/snapshots", json={"snapshot_id": snap})
    assert again.status_code == 409

    put(client, changed, {"qty": 2})
    put(client, added, {"qty": 1})
    diff = client.get(f"/snapshots/{snap}/diff")
    assert diff.status_code == 200, diff.text
    text = diff.text
    assert changed in text and added in text and kept not in text

    restored = client.post(f"/snapshots/{snap}/restore")
    assert restored.status_code == 200, restored.text
    assert client.get(f"/states/{changed}").json()["data"] == {"qty": 1}
    assert client.get(f"/states/{kept}").json()["version"] == 1
    assert client.get(f"/snapshots/missing-{sid}/diff").status_code == 404


def test_views_stats_and_openapi(client: httpx.Client) -> None:
    for path in ("/positions", "/orders", "/balances", "/stats/locks", "/stats/cache"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert isinstance(response.json(), dict | list), path
    schema = client.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/health", "/states", "/snapshots", "/positions"):
        assert path in paths, path

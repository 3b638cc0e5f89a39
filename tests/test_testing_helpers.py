"""statekit.testing's server helpers: a missing server fails under CI, skips locally."""

from __future__ import annotations

import pytest

from statekit.testing import fresh_namespace, server_control, server_url


@pytest.mark.parametrize("helper", [server_url, server_control])
def test_a_missing_server_fails_under_ci_and_skips_locally(
    helper: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATEKIT_TEST_NOSUCH_URL", raising=False)
    monkeypatch.delenv("STATEKIT_TEST_SERVERS_CTL", raising=False)
    assert callable(helper)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: nosuch is not reachable"):
        helper("nosuch")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="start it with"):
        helper("nosuch")


def test_server_control_drives_the_script(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEKIT_TEST_SERVERS_CTL", "/path/to/servers.sh")
    control = server_control("redis")
    assert (control.script, control.name) == ("/path/to/servers.sh", "redis")


def test_fresh_namespaces_differ() -> None:
    assert fresh_namespace() != fresh_namespace()
    assert fresh_namespace("bench").startswith("bench_")

"""``statekit serve`` as a command: what it prints, how it stops, what it refuses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def test_serve_prints_its_url_and_stops_cleanly_on_sigterm(
    tmp_path: Path, start_server: Callable[..., Any]
) -> None:
    store = f"sqlite:///{tmp_path / 'served.db'}"
    with start_server(store, tmp_path) as server:
        first = server.output().splitlines()
        status = server.stop()
        output = server.output()
    port = server.url.rsplit(":", 1)[1]
    line = next((x for x in first if x.startswith("serving ")), "")
    # One line, whatever the width of the terminal (or of none): scripts read it.
    assert line.startswith(f"serving http://127.0.0.1:{port} (store sqlite:///"), first
    assert "served.db)" in line, first
    assert status == 0, output
    assert "Traceback" not in output


def test_non_loopback_host_without_a_key_refuses_to_start(
    tmp_path: Path, serve_cli: Callable[..., Any]
) -> None:
    done = serve_cli(f"sqlite:///{tmp_path / 'x.db'}", tmp_path, "0.0.0.0")

    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert "API key" in lines[0] or "api_key" in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    assert "serving" not in done.stdout


def test_a_busy_port_is_one_line_and_exit_1(
    tmp_path: Path, start_server: Callable[..., Any], serve_cli: Callable[..., Any]
) -> None:
    with start_server(f"sqlite:///{tmp_path / 'a.db'}", tmp_path) as server:
        port = int(server.url.rsplit(":", 1)[1])
        done = serve_cli(f"sqlite:///{tmp_path / 'b.db'}", tmp_path, "127.0.0.1", port=port)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr

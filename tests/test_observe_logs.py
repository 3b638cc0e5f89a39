"""JSON log lines (statekit.observe.logs): the fields, the request id, the traceback."""

from __future__ import annotations

import json
import logging
import sys

from statekit.observe.logs import REQUEST_ID, JsonFormatter, RequestIdFilter, json_logging_config


def _line(record: logging.LogRecord) -> dict[str, object]:
    RequestIdFilter().filter(record)
    parsed: dict[str, object] = json.loads(JsonFormatter().format(record))
    return parsed


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("statekit.test", logging.WARNING, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_a_line_has_the_request_id_of_the_request_it_was_written_in() -> None:
    outside = _line(_record("before"))
    assert outside["request_id"] is None
    token = REQUEST_ID.set("req-7")
    try:
        inside = _line(_record("during %s", status=200))
    finally:
        REQUEST_ID.reset(token)
    assert inside["request_id"] == "req-7"
    assert (inside["level"], inside["logger"], inside["status"]) == (
        "WARNING",
        "statekit.test",
        200,
    )
    assert str(inside["time"]).endswith("+00:00")


def test_a_line_carries_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "statekit.test",
            logging.ERROR,
            __file__,
            1,
            "failed",
            (),
            exc_info=sys.exc_info(),
        )
    line = _line(record)
    assert "ValueError: boom" in str(line["exception"])


def test_the_serve_configuration_sends_uvicorn_to_the_json_handler() -> None:
    """(A real ``statekit serve`` with it: tests/api/test_observe.py.)"""
    config = json_logging_config("info")
    assert config["root"] == {"handlers": ["json"], "level": "INFO"}
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert config["loggers"][name] == {"handlers": [], "propagate": True}

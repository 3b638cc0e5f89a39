"""JSON log lines with the request id (``log_format = "json"``, ``STATEKIT_LOG_FORMAT``).

One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
``request_id`` while a request is served (the API's ``X-Request-ID``), ``exception``
(the formatted traceback) when there is one, and the ``extra`` fields a record
carries (the API's access lines: ``method``, ``route``, ``path``, ``status``,
``duration_ms``). The API sets the request id (:data:`REQUEST_ID`) for the whole
request, so a store or reconcile log line written while serving it carries it too.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["REQUEST_ID", "JsonFormatter", "RequestIdFilter", "json_logging_config"]

REQUEST_ID: ContextVar[str | None] = ContextVar("statekit_request_id", default=None)
"""The id of the request being served (None outside a request)."""

_STANDARD: Final = frozenset(
    set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
)


class RequestIdFilter(logging.Filter):
    """Puts :data:`REQUEST_ID` on every record as ``record.request_id`` (None outside)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """A record as one JSON object (module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in line:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def json_logging_config(level: str) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` that writes every record (uvicorn's too) to
    stderr as JSON lines at ``level``; for ``statekit serve``, whose access lines come
    from the API (with the request id), not from uvicorn's access log."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["json"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }

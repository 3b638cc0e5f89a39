"""The fallback journal's figures for ``GET /metrics`` (Prometheus text format 0.0.4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["fallback_prometheus"]

_GAUGES = {
    "pending": ("statekit_fallback_pending", "Writes waiting in the fallback journal."),
    "rejected": ("statekit_fallback_rejected", "Journaled writes the primary refused at replay."),
    "oldest_pending_s": (
        "statekit_fallback_oldest_pending_seconds",
        "Age of the oldest pending write (NaN when none).",
    ),
    "draining_s": (
        "statekit_fallback_draining_seconds",
        "How long the journal has been non-empty since the primary answered again "
        "(NaN when not draining).",
    ),
    "last_drain_s": (
        "statekit_fallback_last_drain_seconds",
        "How long the last backlog took to drain once the primary answered (NaN: none yet).",
    ),
}
_COUNTERS = {
    "journaled": ("statekit_fallback_journaled_total", "Writes this process journaled."),
    "replayed": ("statekit_fallback_replayed_total", "Writes this process replayed."),
}


def _number(value: Any) -> str:
    return "NaN" if value is None else repr(float(value))


def fallback_prometheus(stats: Mapping[str, Any]) -> str:
    """Gauges and counters of :meth:`TieredBackend.fallback_stats`."""
    lines = [
        "# HELP statekit_fallback_primary_up 1 when the primary answers, else 0 "
        "(writes then go to the fallback journal).",
        "# TYPE statekit_fallback_primary_up gauge",
        f"statekit_fallback_primary_up {1 if stats['primary'] == 'up' else 0}",
    ]
    for field, (metric, text) in _GAUGES.items():
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} gauge"]
        lines.append(f"{metric} {_number(stats.get(field))}")
    for field, (metric, text) in _COUNTERS.items():
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} counter"]
        lines.append(f"{metric} {_number(stats.get(field))}")
    return "\n".join(lines) + "\n"

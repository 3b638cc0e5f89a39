"""Reconciliation metrics: lag, pending work, errors, retries, time to converge.

The engine keeps one :class:`ReconcileMetrics` per scope and stores a snapshot at
``reconcile-metrics/<scope>`` after every pass, so ``statekit doctor``, the API
and the Prometheus endpoint of another process read the same figures.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "LAG_BUCKETS",
    "METRICS_PREFIX",
    "MetricsSnapshot",
    "ReconcileMetrics",
    "lag_histogram_prometheus",
    "percentile",
    "prometheus_text",
]

METRICS_PREFIX = "reconcile-metrics/"
_SAMPLES = 10_000
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Upper bounds (seconds) of the lag histogram's buckets (``lag_histogram``)."""


def percentile(samples: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None without samples."""
    ordered = sorted(samples)
    if not ordered:
        return None
    rank = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class ReconcileMetrics:
    """Counters and the recent lag samples of one engine (scope)."""

    scope: str = "default"
    passes: int = 0
    actions: int = 0
    errors: int = 0
    retries: int = 0
    terminal: int = 0
    drifts: int = 0
    pending: int = 0
    """Keys not in sync after the last pass (queued, waiting, failed or unknown)."""
    failed: int = 0
    """Keys in a terminal failure after the last pass."""
    keys: int = 0
    last_pass_seconds: float | None = None
    converge_seconds: float | None = None
    """From the start of the last pass that found work until every key was in sync."""
    last_error: str | None = None
    updated_at: str | None = None
    holder: str | None = None
    lag: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    """Seconds from an intent's change to the engine seeing it in sync, recent ones."""

    lag_counts: list[int] = field(default_factory=lambda: [0] * (len(LAG_BUCKETS) + 1))
    """Lag samples per bucket of :data:`LAG_BUCKETS` (the last: above them), since start."""
    lag_sum: float = 0.0

    def observe_lag(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.lag.append(seconds)
        self.lag_counts[bisect_left(LAG_BUCKETS, seconds)] += 1
        self.lag_sum += seconds

    def lag_histogram(self) -> dict[str, Any]:
        """Every lag sample since the engine started, as a Prometheus histogram:
        cumulative counts per upper bound (``+Inf`` last), their sum and count."""
        cumulative, total = [], 0
        for count in self.lag_counts:
            total += count
            cumulative.append(total)
        return {"le": [*LAG_BUCKETS, "+Inf"], "counts": cumulative, "sum": self.lag_sum}

    def snapshot(self) -> dict[str, Any]:
        """The figures as JSON (what is stored and served)."""
        return {
            "scope": self.scope,
            "holder": self.holder,
            "passes": self.passes,
            "keys": self.keys,
            "pending": self.pending,
            "failed": self.failed,
            "actions": self.actions,
            "errors": self.errors,
            "retries": self.retries,
            "terminal": self.terminal,
            "drifts": self.drifts,
            "lag_p50_seconds": percentile(self.lag, 0.50),
            "lag_p99_seconds": percentile(self.lag, 0.99),
            "lag_samples": len(self.lag),
            "lag_histogram": self.lag_histogram(),
            "last_pass_seconds": self.last_pass_seconds,
            "converge_seconds": self.converge_seconds,
            "last_error": self.last_error,
            "updated_at": self.updated_at or datetime.now(UTC).isoformat(),
        }


class MetricsSnapshot(BaseModel):
    """A stored snapshot (``reconcile-metrics/<scope>``): what the store validates."""

    model_config = ConfigDict(extra="allow")

    scope: str
    holder: str | None = None
    passes: int = Field(ge=0)
    keys: int = Field(ge=0)
    pending: int = Field(ge=0)
    failed: int = Field(default=0, ge=0)
    actions: int = Field(ge=0)
    errors: int = Field(ge=0)
    retries: int = Field(ge=0)
    terminal: int = Field(ge=0)
    drifts: int = Field(ge=0)
    lag_p50_seconds: float | None = None
    lag_p99_seconds: float | None = None
    lag_samples: int = Field(default=0, ge=0)
    last_pass_seconds: float | None = None
    converge_seconds: float | None = None
    last_error: str | None = None
    updated_at: str | None = None


_COUNTERS = {
    "passes": "Full reconciliation passes run.",
    "actions": "Actions taken (orders placed, cancelled, records written).",
    "errors": "Keys whose reconciliation failed (retried or terminal).",
    "retries": "Keys queued again after a failure, with backoff.",
    "terminal": "Keys that failed terminally (no retry until their desired state changes).",
    "drifts": "Differences found that nobody asked for (orders cancelled outside, orphans).",
}
_GAUGES = {
    "pending": "Keys not in sync after the last pass.",
    "failed": "Keys in a terminal failure after the last pass.",
    "keys": "Keys looked at in the last pass.",
    "lag_p50_seconds": "Median seconds from an intent change to in sync (recent samples).",
    "lag_p99_seconds": "99th percentile seconds from an intent change to in sync.",
    "last_pass_seconds": "Seconds the last full pass took.",
    "converge_seconds": "Seconds the last pass with work took to bring every key in sync.",
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(snapshots: Mapping[str, Mapping[str, Any]]) -> str:
    """The Prometheus text exposition (format 0.0.4) of every scope's snapshot."""
    lines: list[str] = []
    for name, help_text in _COUNTERS.items():
        metric = f"statekit_reconcile_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for scope, snap in sorted(snapshots.items()):
            lines.append(f'{metric}{{scope="{_label(scope)}"}} {snap.get(name) or 0}')
    for name, help_text in _GAUGES.items():
        metric = f"statekit_reconcile_{name}"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        for scope, snap in sorted(snapshots.items()):
            value = snap.get(name)
            shown = "NaN" if value is None else repr(float(value))
            lines.append(f'{metric}{{scope="{_label(scope)}"}} {shown}')
    metric = "statekit_reconcile_last_update_timestamp_seconds"
    lines += [
        f"# HELP {metric} When the engine last stored its figures (Unix time): alert when "
        "it falls behind, an engine that stopped looks healthy otherwise.",
        f"# TYPE {metric} gauge",
    ]
    for scope, snap in sorted(snapshots.items()):
        lines.append(f'{metric}{{scope="{_label(scope)}"}} {_timestamp(snap.get("updated_at"))}')
    return "\n".join(lines) + "\n"


def lag_histogram_prometheus(snapshots: Mapping[str, Mapping[str, Any]]) -> str:
    """``statekit_reconcile_lag_seconds``, the histogram of every scope's stored
    ``lag_histogram`` (format 0.0.4); a scope without one (an older engine), or with one
    that does not parse, is left out."""
    metric = "statekit_reconcile_lag_seconds"
    lines = [
        f"# HELP {metric} Seconds from an intent change to in sync, every sample since the "
        "engine started.",
        f"# TYPE {metric} histogram",
    ]
    for scope, snap in sorted(snapshots.items()):
        parsed = _histogram(snap.get("lag_histogram"))
        if parsed is None:
            continue
        label = f'scope="{_label(scope)}"'
        bounds, counts, total = parsed
        for bound, count in zip(bounds, counts, strict=True):
            lines.append(f'{metric}_bucket{{{label},le="{bound}"}} {count}')
        lines.append(f"{metric}_sum{{{label}}} {total!r}")
        lines.append(f"{metric}_count{{{label}}} {counts[-1]}")
    return "\n".join(lines) + "\n"


def _histogram(stored: Any) -> tuple[list[str], list[int], float] | None:
    try:
        bounds = [b if b == "+Inf" else repr(float(b)) for b in stored["le"]]
        counts = [int(c) for c in stored["counts"]]
        total = float(stored["sum"])
    except (TypeError, KeyError, ValueError):
        return None
    ordered = all(a <= b for a, b in pairwise(counts))
    if not counts or len(bounds) != len(counts) or bounds[-1] != "+Inf" or not ordered:
        return None
    return bounds, counts, total


def _timestamp(updated_at: Any) -> str:
    """An ISO 8601 ``updated_at`` as Unix seconds; NaN when absent or unreadable."""
    if not isinstance(updated_at, str):
        return "NaN"
    try:
        at = datetime.fromisoformat(updated_at.replace("Z", "+00:00"))
    except ValueError:
        return "NaN"
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return repr(at.timestamp())

"""A primary that could not be opened yet: the tiered store starts without it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, NoReturn, Self

from statekit.backend import Backend, Capability, Guard, Health, Record, Write
from statekit.errors import BackendUnavailable, StatekitError

__all__ = ["UnopenedPrimary"]


class UnopenedPrimary(Backend):
    """Stands for a primary that was unavailable when the store opened.

    Every call is :class:`BackendUnavailable`; the tiered store calls
    :meth:`connect` until the real backend opens, then uses that instead.

    :param name: the primary's backend name.
    :param capabilities: what its class declares (the opened backend may add some).
    :param opener: opens the real backend (``cls.open(url)``).
    :param error: why it could not be opened.
    """

    def __init__(
        self,
        name: str,
        capabilities: frozenset[Capability],
        opener: Callable[[], Awaitable[Backend]],
        error: BackendUnavailable,
        description: dict[str, Any],
    ) -> None:
        self.name = name  # type: ignore[misc]
        self.capabilities = capabilities
        self._opener = opener
        self.error = error
        self._description = description

    @classmethod
    async def open(cls, url: str) -> Self:
        raise StatekitError("an UnopenedPrimary is made by statekit.open, not opened by URL")

    async def connect(self) -> Backend:
        """Open the real primary; BackendUnavailable while it still cannot be reached."""
        try:
            return await self._opener()
        except BackendUnavailable as exc:
            self.error = exc
            raise

    def _unavailable(self) -> NoReturn:
        raise BackendUnavailable(
            f"the {self.name} primary has not been reachable since the store opened: {self.error}",
            backend=self.name,
        )

    async def append(
        self, writes: Sequence[Write], at: datetime, *, guards: Sequence[Guard] = ()
    ) -> list[Record]:
        self._unavailable()

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Record]:
        self._unavailable()

    async def latest(self, keys: Sequence[str]) -> dict[str, Record]:
        self._unavailable()

    async def as_of(self, keys: Sequence[str], at: datetime) -> dict[str, Record]:
        self._unavailable()

    def scan(self, prefix: str = "", kind: str | None = None) -> AsyncIterator[Record]:
        return self._scan()

    async def _scan(self) -> AsyncIterator[Record]:
        self._unavailable()
        yield  # pragma: no cover - makes this an async generator

    async def prune(self, key: str, before_version: int) -> int:
        self._unavailable()

    async def watch(self, prefix: str = "") -> AsyncIterator[Record]:
        self._unavailable()

    async def health(self) -> Health:
        self._unavailable()

    def describe(self) -> dict[str, Any]:
        return {**self._description, "opened": False}

    async def aclose(self) -> None:
        return None

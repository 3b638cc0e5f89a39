"""The ``positions`` reconciler: its keys, its passes, and the flow of one symbol.

See the package docstring for what it does; :mod:`.sources` reads, :mod:`.decide`
decides and :mod:`.writes` writes.
"""

from __future__ import annotations

from decimal import Decimal

from statekit.codec import check_key
from statekit.errors import ValidationError
from statekit.trading.errors import ExchangeUnavailable, RateLimited, ReconcileError
from statekit.trading.reconcile.base import Action, Context, Reconciler, Result
from statekit.trading.reconcile.positions.decide import SymbolStep
from statekit.trading.reconcile.positions.log import DISCREPANCY_FOLDER, ReportSource
from statekit.trading.reconcile.positions.sources import (
    Listed,
    Pass,
    observe_pass,
    read,
    targeted,
)
from statekit.trading.reconcile.positions.writes import Recorder

__all__ = ["KEY_PREFIX", "PositionReconciler"]

KEY_PREFIX = "position:"
"""Work keys are ``position:<symbol>``."""
ZERO = Decimal(0)


class PositionReconciler(Reconciler):
    """Position reconciliation with the exchange as the source of truth (package docstring).

    :param prefix: the trading state's key prefix (``"acct-1/"``), as ``TradingState(prefix=)``.
    :param tolerance: amounts that differ by at most this much are equal (default 0:
        exact Decimal comparison). Entry prices are always compared exactly.
    :param confirmations: consecutive targeted queries (one per pass) that must confirm
        a position absent before it is removed from the store.
    :raises ValidationError: a negative or non-Decimal tolerance, confirmations below 1.
    """

    name = "positions"

    def __init__(
        self, *, prefix: str = "", tolerance: Decimal = ZERO, confirmations: int = 1
    ) -> None:
        if not isinstance(tolerance, Decimal) or not tolerance.is_finite() or tolerance < 0:
            raise ValidationError(
                f"tolerance must be a finite Decimal >= 0, not {tolerance!r}", reason="tolerance"
            )
        if isinstance(confirmations, bool) or not isinstance(confirmations, int):
            raise ValidationError(
                f"confirmations must be an int, not {confirmations!r}", reason="confirmations"
            )
        if confirmations < 1:
            raise ValidationError(
                f"confirmations must be at least 1, not {confirmations}", reason="confirmations"
            )
        if not isinstance(prefix, str):
            raise ValidationError(f"prefix must be a string, not {prefix!r}", reason="prefix")
        self.prefix = prefix
        self.tolerance = tolerance
        self.confirmations = confirmations
        self._pass: Pass | None = None
        self._passes = 0
        # Per symbol, how many passes in a row a targeted query confirmed it absent, and
        # the last such pass. In memory: a new holder starts from 0, which only delays.
        self._confirmed: dict[str, tuple[int, int]] = {}

    # -- keys --------------------------------------------------------------------------------

    def key_of(self, symbol: str) -> str:
        """The work key of ``symbol``."""
        return KEY_PREFIX + symbol

    def position_key(self, symbol: str) -> str:
        """The store key of ``symbol``'s position (TradingState's ``position/<symbol>``)."""
        return f"{self.prefix}position/{symbol}"

    def log_key(self, symbol: str) -> str:
        """The store key of ``symbol``'s discrepancy log."""
        return f"{self.prefix}{DISCREPANCY_FOLDER}{symbol}"

    def _symbol(self, ctx: Context, key: str) -> str:
        symbol = key.removeprefix(KEY_PREFIX)
        if not key.startswith(KEY_PREFIX) or not symbol:
            raise ReconcileError(
                f"positions: unknown work key {key!r} (expected 'position:<symbol>')",
                key=key,
                reason="BadKey",
                terminal=True,
            )
        try:
            check_key(self.position_key(symbol))
            check_key(self.log_key(symbol))
        except ValidationError as exc:
            raise ReconcileError(
                f"positions: the symbol {symbol!r} cannot name a store key ({exc.reason})",
                key=key,
                reason="BadSymbol",
                terminal=True,
            ) from None
        if not ctx.scope.includes(symbol):
            raise ReconcileError(
                f"positions: {symbol!r} is outside the scope {ctx.scope.name!r}",
                key=key,
                reason="OutOfScope",
                terminal=True,
            )
        return symbol

    # -- the reconciler contract -------------------------------------------------------------

    async def observe(self, ctx: Context) -> list[str]:
        current = await observe_pass(ctx, self.prefix + "position/", self._passes + 1)
        self._passes += 1
        self._pass = current
        for symbol in current.report:  # listed again: any earlier confirmation was wrong
            self._confirmed.pop(symbol, None)
        return [self.key_of(s) for s in sorted(current.versions.keys() | current.report.keys())]

    async def plan(self, ctx: Context, key: str) -> list[Action]:
        try:
            return (await self._reconcile(ctx, key, apply=False)).actions
        except ReconcileError as exc:
            if not exc.terminal:
                raise
            # One key that cannot be reconciled does not hide what the others would do.
            symbol = key.removeprefix(KEY_PREFIX)
            return [Action(self.name, key, "fail", symbol, f"{exc.reason}: {exc}")]

    async def reconcile(self, ctx: Context, key: str) -> Result:
        return await self._reconcile(ctx, key, apply=True)

    # -- one symbol --------------------------------------------------------------------------

    async def _reconcile(self, ctx: Context, key: str, *, apply: bool) -> Result:
        symbol = self._symbol(ctx, key)
        step = await self._step(ctx, key, symbol, apply=apply and not ctx.dry_run)
        recorder = step.recorder
        listed = self._from_report(symbol, step.stored.version) or await targeted(ctx, symbol)
        if listed.position is None and step.stored.observation.holds_position:
            if not step.seen.flag_open:
                await step.flag(listed)
            if listed.source is ReportSource.BULK:
                try:
                    listed = await targeted(ctx, symbol)
                except (ExchangeUnavailable, RateLimited) as exc:
                    if recorder.apply:
                        raise  # retried with backoff; the store is left as it is
                    step.note("resolve", f"targeted query failed ({exc}); nothing would change")
                    return recorder.result
        if listed.position is not None:
            if recorder.apply:
                self._confirmed.pop(symbol, None)
            await step.follow(listed)
        elif not step.stored.observation.holds_position:
            await step.settle_absent(listed)
        else:
            count, serial = self._confirmation(symbol)
            if count >= self.confirmations:
                await step.remove(listed)
                if recorder.apply:
                    self._confirmed.pop(symbol, None)
            else:
                if recorder.apply:
                    self._confirmed[symbol] = (count, serial)
                step.wait(count)
        return recorder.result

    async def _step(self, ctx: Context, key: str, symbol: str, *, apply: bool) -> SymbolStep:
        """Read what the store and its cache hold for ``symbol``, ready to decide."""
        position_key, log_key = self.position_key(symbol), self.log_key(symbol)
        seen = await read(
            ctx, prefix=self.prefix, key=key, position_key=position_key, log_key=log_key
        )
        recorder = Recorder(
            ctx,
            name=self.name,
            key=key,
            symbol=symbol,
            position_key=position_key,
            log_key=log_key,
            seen=seen,
            apply=apply,
            report_at=None if self._pass is None else self._pass.report_at,
        )
        return SymbolStep(
            seen, recorder, tolerance=self.tolerance, confirmations=self.confirmations
        )

    def _confirmation(self, symbol: str) -> tuple[int, int]:
        """The confirmations of ``symbol``'s absence counting this one, and this pass's serial;
        a pass counts once however often its key is retried (0: no pass, each call counts)."""
        serial = 0 if self._pass is None else self._pass.serial
        count, last = self._confirmed.get(symbol, (0, -1))
        return (count if serial and last == serial else count + 1), serial

    def _from_report(self, symbol: str, version: int) -> Listed | None:
        """The bulk report's word on ``symbol``, when it can be trusted for it; None when
        no pass has a report, or the store position changed since the pass read it."""
        current = self._pass
        if current is None or current.versions.get(symbol, 0) != version:
            return None
        return Listed(current.report.get(symbol), ReportSource.BULK)

"""The one place a backend's driver exceptions become statekit errors, and its closed state.

::

    self.guard = DriverGuard("mysql", url, errors=(pymysql.MySQLError, OSError),
                             translate=mysql_error)
    ...
    with self.guard.calls():          # raises BackendError once closed
        rows = await cursor.fetchall()  # a driver error leaves as a statekit error

``translate`` classifies what it knows (a server error code that means "try
later", a refused login) and returns None for the rest, which gets the default
rule: ``OSError``/``TimeoutError`` (the server cannot be reached, the same call may
work later) are :class:`~statekit.errors.BackendUnavailable`, anything else
:class:`~statekit.errors.BackendError`. Every message names the backend and the
URL with its secrets masked, and driver text is scrubbed of them too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from statekit.errors import BackendError, BackendUnavailable, StatekitError
from statekit.redact import Redactor, redact_url

__all__ = ["DriverGuard", "Translate"]

Translate = Callable[["DriverGuard", BaseException], StatekitError | None]
"""``(guard, exc)`` -> the statekit error for ``exc``, or None for the default rule.
Build messages with :meth:`DriverGuard.unavailable` / :meth:`DriverGuard.failed`."""

MAX_TEXT = 500
"""Driver text longer than this is cut in messages (some drivers print whole queries)."""


def _default(guard: DriverGuard, exc: BaseException) -> StatekitError | None:
    return None


class DriverGuard:
    """Translates driver exceptions and refuses calls once the backend is closed.

    :param backend: the backend's name, set on every error (``err.backend``).
    :param url: the store URL (or a description such as ``<asyncpg pool>``); only its
        redacted form is ever shown, and its secrets are scrubbed from driver text.
    :param errors: the exception types a driver call may raise; others pass through.
    :param translate: the backend's own classification (see :data:`Translate`).
    :param label: how messages name what is guarded (default: ``backend``).
    :param secrets: more text to mask in messages (credentials given apart from the URL).
    """

    def __init__(
        self,
        backend: str,
        url: str,
        *,
        errors: tuple[type[BaseException], ...] = (OSError,),
        translate: Translate = _default,
        label: str | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.backend = backend
        self.label = label or backend
        """How messages name what is guarded (``redis cache``); the backend's name by default."""
        self.shown = redact_url(url) if "://" in url else url
        self.errors = errors
        self._translate = translate
        self._redactor = Redactor(secrets, urls=[url] if "://" in url else [])
        self.closed = False

    @property
    def where(self) -> str:
        """What every message starts with: ``<label> <shown URL>``."""
        return f"{self.label} {self.shown}"

    # -- closed state --------------------------------------------------------------

    def check_open(self) -> None:
        """BackendError when the backend is closed."""
        if self.closed:
            raise self.closed_error()

    def closed_error(self) -> BackendError:
        """The BackendError of a call to a closed backend."""
        return BackendError(f"{self.where}: the backend is closed", backend=self.backend)

    def close(self) -> bool:
        """Mark the backend closed; True the first time (so ``aclose`` runs once)."""
        first, self.closed = not self.closed, True
        return first

    # -- translation ---------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` with the URL's secrets (and ``secrets``) masked."""
        return self._redactor.text(text)

    def detail(self, exc: BaseException) -> str:
        """A driver exception's message on one line, secrets masked, long text cut."""
        text = self.scrub(str(exc).replace("\n", " "))
        return text[:MAX_TEXT] + "..." if len(text) > MAX_TEXT else text

    def text(self, exc: BaseException) -> str:
        """``Kind: message`` of a driver exception (:meth:`detail`)."""
        text = self.detail(exc)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    def unavailable(self, reason: str, exc: BaseException | None = None) -> BackendUnavailable:
        """A BackendUnavailable (retryable) saying ``reason``, with ``exc``'s text."""
        detail = f" ({self.text(exc)})" if exc is not None else ""
        return BackendUnavailable(f"{self.where}: {reason}{detail}", backend=self.backend)

    def failed(self, reason: str, exc: BaseException | None = None) -> BackendError:
        """A BackendError saying ``reason``, with ``exc``'s text."""
        detail = f" ({self.text(exc)})" if exc is not None else ""
        return BackendError(f"{self.where}: {reason}{detail}", backend=self.backend)

    def translate(self, exc: BaseException) -> StatekitError:
        """The statekit error for ``exc`` (raise it ``from exc``)."""
        if isinstance(exc, StatekitError):
            return exc
        found = self._translate(self, exc)
        if found is not None:
            return found
        if isinstance(exc, TimeoutError):
            return self.unavailable("no answer in time", exc)
        if isinstance(exc, OSError):
            return self.unavailable("cannot reach the server", exc)
        return BackendError(f"{self.where}: {self.text(exc)}", backend=self.backend)

    def failure(self, exc: BaseException) -> BaseException:
        """What a caller should see of ``exc`` raised by a driver call outside
        :meth:`calls` (a future's exception): a driver error translated, with ``exc`` as
        its ``__cause__``; anything else as it is."""
        if not isinstance(exc, self.errors) or isinstance(exc, StatekitError):
            return exc
        error = self.closed_error() if self.closed else self.translate(exc)
        error.__cause__ = exc
        return error

    @contextmanager
    def calls(self) -> Iterator[None]:
        """Run driver calls: BackendError if closed, driver errors translated (a call
        the backend's closing broke says the backend is closed)."""
        self.check_open()
        try:
            yield
        except self.errors as exc:
            if isinstance(exc, StatekitError):
                raise
            if self.closed:
                raise self.closed_error() from exc
            raise self.translate(exc) from exc

"""The one exception hierarchy of statekit (ARCHITECTURE §6).

Every error a caller can see is a :class:`StatekitError`. Errors carry fields,
not only text, so code can act on them (``err.key``, ``err.expected``, ...).
Driver exceptions are translated into these in one place per backend with
``raise ... from exc``; the conformance suite checks that no driver type leaks.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExists",
    "BackendError",
    "BackendUnavailable",
    "CapabilityError",
    "ConfigError",
    "ConflictError",
    "HistoryUnavailable",
    "NotFound",
    "PluginError",
    "SerializationError",
    "StatekitError",
    "ValidationError",
]


def _rebuilt(cls: type[StatekitError], args: tuple[object, ...], fields: dict[str, object]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(fields)
    return error


class StatekitError(Exception):
    """Base of every error statekit raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the fields when the error crosses a process boundary (keyword-only
        # constructors cannot be rebuilt from ``args`` alone).
        return (_rebuilt, (type(self), self.args, dict(self.__dict__)))


class ConfigError(StatekitError):
    """The configuration is unreadable or invalid.

    :param source: where the bad setting came from (a file path, ``env``...).
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class PluginError(StatekitError):
    """A plugin could not be loaded, or registered something it may not.

    :param plugin: the plugin's name (its entry-point name).
    """

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin


class ValidationError(StatekitError):
    """A key, kind, value or write was refused before anything was stored.

    :param key: the key the write was for, when there is one.
    :param reason: what is wrong, in a few words.
    """

    def __init__(self, message: str, *, key: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.reason = reason or message


class NotFound(ValidationError, KeyError):
    """The thing an operation needs does not exist: an intent to update, a snapshot to
    restore, a store a read-only command opens. Nothing was changed.

    It is a :class:`ValidationError` (what statekit raised for these before, so
    ``except ValidationError`` keeps working) and a :class:`KeyError`, as a lookup
    in a mapping would raise; the API answers 404.

    :param key: the key (or the store URL, shown redacted) that was not found.
    :param what: what was looked for, in a word (``intent``, ``snapshot``, ``store``).
    :param reason: as :class:`ValidationError`'s, ``not found`` unless said.
    """

    def __init__(
        self, message: str, *, key: str | None = None, what: str = "", reason: str = "not found"
    ) -> None:
        super().__init__(message, key=key, reason=reason)
        self.what = what

    def __str__(self) -> str:
        # KeyError's own __str__ would quote the message as a key: 'no intent ...'
        return str(self.args[0]) if self.args else ""


class CapabilityError(StatekitError):
    """The backend cannot do what was asked, and statekit will not fake it.

    :param backend: the backend's name.
    :param capability: the missing capability.
    """

    def __init__(self, message: str, *, backend: str, capability: str) -> None:
        super().__init__(message)
        self.backend = backend
        self.capability = capability


class HistoryUnavailable(StatekitError):
    """The history needed to answer was pruned, so the answer is unknown.

    :param key: the key asked about.
    """

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class BackendError(StatekitError):
    """The storage backend failed.

    :param backend: the backend's name (``sqlite``, ``postgresql``...).
    """

    retryable: bool = False

    def __init__(self, message: str, *, backend: str | None = None) -> None:
        super().__init__(message)
        self.backend = backend


class BackendUnavailable(BackendError):
    """The backend cannot be reached now; the same call may succeed later."""

    retryable = True


class ConflictError(BackendError):
    """A write's ``expect`` did not match the key's head version.

    Nothing of the write (or of its batch) was stored.

    :param key: the key whose check failed.
    :param expected: the version the write expected (0 = must not exist).
    :param actual: the head version found (0 = the key has never been written).
    """

    def __init__(self, key: str, expected: int, actual: int, *, backend: str | None = None) -> None:
        super().__init__(
            f"conflict on {key!r}: expected version {expected}, found {actual}",
            backend=backend,
        )
        self.key = key
        self.expected = expected
        self.actual = actual


class SerializationError(BackendError):
    """A value cannot be stored as JSON, or stored bytes cannot be read back.

    :param key: the key the value was for.
    :param path: where in the value the problem is (``$.legs[0].qty``).
    """

    def __init__(
        self, message: str, *, key: str | None = None, path: str = "$", backend: str | None = None
    ) -> None:
        super().__init__(message, backend=backend)
        self.key = key
        self.path = path


class AlreadyExists(ConflictError):
    """A create found the thing there already: an intent id (``IntentStore.create``), a
    snapshot id. Nothing was stored. (A plain ``put(..., expect=0)`` on a key that exists
    raises its parent, :class:`ConflictError`.)

    A :class:`ConflictError` (head version ``actual``, where the create expected 0), as
    statekit raised for these before; the API answers 409.

    :param key: the key that exists.
    :param actual: its head version.
    :param what: what was to be created, in a word (``intent``, ``snapshot``).
    :param message: the text, when the key alone would not say it well.
    """

    def __init__(
        self,
        key: str,
        actual: int,
        *,
        what: str = "",
        message: str | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(key, 0, actual, backend=backend)
        self.what = what
        if message is not None:
            self.args = (message,)

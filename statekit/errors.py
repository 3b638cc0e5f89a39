"""The one exception hierarchy of statekit (ARCHITECTURE §6).

Every error a caller can see is a :class:`StatekitError`. Errors carry fields,
not only text, so code can act on them (``err.key``, ``err.expected``, ...).
Driver exceptions are translated into these in one place per backend with
``raise ... from exc``; the conformance suite checks that no driver type leaks.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "CapabilityError",
    "ConfigError",
    "ConflictError",
    "HistoryUnavailable",
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

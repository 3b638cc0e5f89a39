"""InfluxQL text built from values a caller controls, quoted in one place.

Every string that reaches a query goes through :func:`literal`, :func:`ident` or
:func:`prefix_regex`; nothing is pasted into a query unquoted.
"""

from __future__ import annotations

import re

__all__ = ["ident", "literal", "prefix_regex"]

_REGEX_SPECIAL = re.compile(r"[\\.+*?()|\[\]{}^$/]")


def literal(value: str) -> str:
    """A single-quoted InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ident(name: str) -> str:
    """A double-quoted InfluxQL identifier (keywords like ``key`` included)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prefix_regex(prefix: str) -> str:
    """A ``/^.../`` regex literal matching strings that start with ``prefix``.

    Regex metacharacters are escaped for RE2 (the server's engine) and ``/`` for the
    literal itself; everything else, unicode included, stands for itself.
    """
    return "/^" + _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(), prefix) + "/"

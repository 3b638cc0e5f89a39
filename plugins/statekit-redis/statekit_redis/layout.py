"""Where a namespace's data lives in Redis, and the text of one stored version.

Every Redis key of namespace ``ns`` starts with ``sk:{ns}:``. The ``{ns}`` part
is a Redis Cluster hash tag: all keys of a namespace hash to one slot, so the
Lua scripts (which must name every key they touch in ``KEYS``) work on a
cluster as on a single server.

=========================  ======  ==================================================
key                        type    holds
=========================  ======  ==================================================
``sk:{ns}:heads``          HASH    user key -> ``"<head version>:<1 live | 0 deleted>:<at µs>"``
``sk:{ns}:live``           ZSET    live user keys, all scores 0 (prefix scans by lex)
``sk:{ns}:v:<user key>``   ZSET    one member per version: score = version,
                                   member = the record's JSON text
``sk:{ns}:log``            STREAM  one entry per committed version, for watch;
                                   entry ID ``<seq>-0``
``sk:{ns}:seq``            STRING  the last commit sequence number of the log
``sk:{ns}:meta``           HASH    ``layout`` -> the layout version of this namespace
=========================  ======  ==================================================

A stored version (a history member, and the ``r`` field of a log entry) is one
JSON object, ``{"v":<version>,"at":<µs>,"k":<kind>,"m":<meta>,"d":<data>}``.
The append script builds it by concatenation,
``'{"v":' .. version .. ',"at":' .. at .. tail``, with ``tail`` made here from
text the core already encoded, so Lua never parses a value; and the ``as_of``
script reads a version's time from the text's first bytes.

Layout 1 (statekit-redis before 0.2) put ``at`` after the meta and kept no
``at`` in the heads hash: such records still read (they are JSON), and the
scripts fall back to decoding them for their time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from statekit import codec
from statekit.backend import Record, dumps
from statekit.codec import loads
from statekit.kit import Fields, from_document

__all__ = [
    "FIELDS",
    "LAYOUT_VERSION",
    "Layout",
    "check_namespace",
    "decode",
    "record_text",
    "tail",
]

LAYOUT_VERSION = 2
"""Bumped when the key layout or the record text changes; stored in ``sk:{ns}:meta``.
2: ``at`` moved to the front of a record's text and into the heads hash."""


def check_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is usable (statekit's one rule), else raise ConfigError.

    The rule allows no ``{``/``}`` (they would break the hash tag), no glob
    characters, nothing that needs quoting.
    """
    return codec.check_namespace(namespace, backend="redis")


@dataclass(frozen=True, slots=True)
class Layout:
    """The Redis key names of one namespace (computed once: they are on every call's path)."""

    namespace: str
    prefix: str = field(init=False)
    """What every Redis key of the namespace starts with: ``sk:{<namespace>}:``."""
    heads: str = field(init=False)
    live: str = field(init=False)
    log: str = field(init=False)
    seq: str = field(init=False)
    meta: str = field(init=False)
    history_prefix: str = field(init=False)
    """Prepend to a user key to get the name of its history ZSET."""

    def __post_init__(self) -> None:
        prefix = f"sk:{{{self.namespace}}}:"
        for name, value in [
            ("prefix", prefix),
            ("heads", prefix + "heads"),
            ("live", prefix + "live"),
            ("log", prefix + "log"),
            ("seq", prefix + "seq"),
            ("meta", prefix + "meta"),
            ("history_prefix", prefix + "v:"),
        ]:
            object.__setattr__(self, name, value)

    def history(self, key: str) -> str:
        """The history ZSET of ``key``."""
        return self.history_prefix + key

    def fixed(self) -> tuple[str, ...]:
        """The namespace's keys that are not per user key."""
        return (self.heads, self.live, self.log, self.seq, self.meta)


@functools.lru_cache(maxsize=1024)
def _kind_json(kind: str) -> str:
    # Kinds are few (position, order...): encode each once.
    return dumps(kind)


def tail(kind: str, meta_json: str, data_json: str | None) -> str:
    """Everything of a stored version after its version number and time."""
    return (
        ',"k":'
        + _kind_json(kind)
        + ',"m":'
        + meta_json
        + ',"d":'
        + (data_json if data_json is not None else "null")
        + "}"
    )


def record_text(version: int, at_micros: int, tail: str) -> str:
    """The stored text of a version (``tail`` from :func:`tail`), as the append script
    builds it."""
    return '{"v":' + str(version) + ',"at":' + str(at_micros) + tail


FIELDS = Fields(version="v", kind="k", data="d", meta="m")
"""A stored version's JSON field names, for statekit.kit's record builder."""


def decode(key: str, text: bytes | str) -> Record:
    """The Record of a stored version's text; SerializationError if it is not one."""
    return from_document(loads(text, key=key, backend="redis"), FIELDS, key=key, backend="redis")

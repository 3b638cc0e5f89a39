"""What travels over ``WS /ws``: topics, client messages, server messages, close codes.

The fan-out that decides *when* a message goes out is :mod:`statekit.api.ws`; this
module only says what a client may send (and how a bad message is refused) and how
each server message reads. The protocol is documented in docs/websocket.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from statekit.backend import JSON, Record, dumps
from statekit.codec import MAX_VERSION, check_key, check_kind, check_prefix, escape_surrogates
from statekit.errors import ValidationError

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_LAGGING",
    "CLOSE_TRY_AGAIN_LATER",
    "CLOSE_UNAUTHORIZED",
    "MAX_TOPIC_LENGTH",
    "Close",
    "Frame",
    "Refused",
    "Topic",
    "change_frame",
    "decode_message",
    "encode",
    "parse_since",
    "unknown_action",
]

CLOSE_UNAUTHORIZED = 4401
"""Close code: the connection carried no valid API key."""
CLOSE_LAGGING = 4408
"""Close code: the client fell too far behind (its queue overflowed)."""
CLOSE_GOING_AWAY = 1001
"""Close code: the server is shutting down."""
CLOSE_INTERNAL_ERROR = 1011
"""Close code: the store stopped delivering changes."""
CLOSE_TRY_AGAIN_LATER = 1013
"""Close code: the server already has ``max_clients`` connections."""

MAX_TOPIC_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed subscription topic.

    :param text: the topic as the client sent it (echoed in every message).
    :param kind: for ``states:<kind>``, the kind matched; None for ``states:*``.
    :param prefix: for ``keys:<prefix>``, the key prefix matched; else None.
    """

    text: str
    kind: str | None = None
    prefix: str | None = None

    @classmethod
    def parse(cls, value: object) -> Topic:
        """The topic ``value`` names, or :class:`Refused` (``bad_topic``)."""
        if not isinstance(value, str) or not value:
            raise Refused("bad_topic", "topic must be a non-empty string", topic=None)
        if len(value) > MAX_TOPIC_LENGTH:
            raise Refused(
                "bad_topic",
                f"topic is {len(value)} characters long; the limit is {MAX_TOPIC_LENGTH}",
                topic=value[:80],
            )
        scheme, sep, rest = value.partition(":")
        try:
            if sep and scheme == "states" and rest == "*":
                return cls(value)
            if sep and scheme == "states" and rest:
                return cls(value, kind=check_kind(rest))
            if sep and scheme == "keys":
                return cls(value, prefix=check_prefix(rest))
        except ValidationError as exc:  # a kind or prefix no change can have
            raise Refused("bad_topic", f"topic {value[:80]!r}: {exc}", topic=value[:80]) from None
        raise Refused(
            "bad_topic",
            f"unknown topic {value[:80]!r}: use states:<state_type>, states:* or keys:<prefix>",
            topic=value[:80],
        )

    def matches(self, record: Record) -> bool:
        """True when a change of ``record`` belongs to this topic."""
        if self.prefix is not None:
            return record.key.startswith(self.prefix)
        return self.kind is None or record.kind == self.kind


class Refused(Exception):
    """A client message the hub answers with an ``error`` message (never raised out)."""

    def __init__(self, code: str, message: str, **fields: JSON) -> None:
        super().__init__(message)
        self.code = code
        self.fields = fields

    def frame(self) -> str:
        text = encode({"type": "error", "code": self.code, "message": str(self), **self.fields})
        # It may echo a client's lone surrogate ("\\ud800" in its JSON); a text frame is
        # UTF-8, so send it back as that same JSON escape.
        return escape_surrogates(text)


@dataclass(frozen=True, slots=True)
class Frame:
    """One message to send; ``change`` = (topic, key, version) for a change message."""

    text: str
    change: tuple[str, str, int] | None = None


@dataclass(frozen=True, slots=True)
class Close:
    """Tells the sender to stop: send ``lagging`` first when ``lagging``, then close."""

    code: int
    reason: str
    lagging: bool = False
    error: str | None = None


def encode(message: Mapping[str, JSON]) -> str:
    """A server message as the text of one frame."""
    return dumps(dict(message))


def _description(record: Record) -> JSON:
    for field in ("note", "description"):
        value = record.meta.get(field)
        if isinstance(value, str):
            return value
    return None


def change_frame(topic: str, record: Record) -> Frame:
    """The ``change`` message of ``record`` for a subscription to ``topic``."""
    text = encode(
        {
            "type": "change",
            "topic": topic,
            "state_id": record.key,
            "state_type": record.kind,
            "version": record.version,
            "data": record.data,
            "deleted": record.deleted,
            "timestamp": record.at.isoformat(),
            "description": _description(record),
        }
    )
    return Frame(text, (topic, record.key, record.version))


def decode_message(text: str, max_bytes: int) -> dict[str, Any]:
    """A client message as a JSON object, or :class:`Refused` saying why it is not one."""
    size = len(text.encode())
    if size > max_bytes:
        raise Refused("message_too_large", f"message is {size} bytes; the limit is {max_bytes}")
    try:
        message = json.loads(text)
    except ValueError:
        raise Refused("bad_json", "the message is not valid JSON") from None
    except RecursionError:
        raise Refused("bad_json", "the message is nested too deeply to read") from None
    if not isinstance(message, dict):
        raise Refused("bad_message", "a message is a JSON object with an action")
    return message


def unknown_action(action: object) -> Refused:
    """The refusal of an ``action`` the hub does not know (without echoing it whole)."""
    if isinstance(action, dict | list):
        # What a JSON structure is, for a message that must not echo it whole (nor walk it).
        shown = "(an object)" if isinstance(action, dict) else "(an array)"
    else:
        shown = repr((action if isinstance(action, str) else json.dumps(action))[:80])
    return Refused("unknown_action", f"unknown action {shown}: use subscribe, unsubscribe or ping")


def parse_since(topic: Topic, value: object, max_keys: int) -> dict[str, int] | None:
    """A subscribe's ``since`` (``{"<state_id>": <version>}``) checked, or None when absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Refused("bad_since", 'since is an object {"<state_id>": <version>}', topic=topic.text)
    if len(value) > max_keys:
        raise Refused(
            "bad_since",
            f"since names {len(value)} keys; the limit is {max_keys}",
            topic=topic.text,
        )
    since: dict[str, int] = {}
    for key, version in value.items():
        try:
            check_key(key)
        except ValidationError as exc:
            raise Refused("bad_since", str(exc), topic=topic.text) from None
        if (
            not isinstance(version, int)
            or isinstance(version, bool)
            or not 0 <= version <= MAX_VERSION
        ):
            raise Refused(
                "bad_since",
                f"since[{key!r}] must be a version number from 0 to {MAX_VERSION}",
                topic=topic.text,
            )
        since[key] = version
    return since or None

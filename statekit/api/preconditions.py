"""Conditional writes (RFC 9110): ``ETag`` out, ``If-Match`` / ``If-None-Match`` in.

A state's ETag is its version (``"3"``). A write that sends it back as ``If-Match``
lands only if the head is still that version, ``If-Match: *`` only if the key has a
live value, ``If-None-Match: *`` only if it has none (create only); otherwise the
answer is 412 and nothing changes. :func:`parse` reads the headers,
:func:`expect` turns what they ask into the store's ``expect=``.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Final

from fastapi import Header, Response

from statekit.api.errors import ApiError
from statekit.api.models import StateOut, state_json, state_out
from statekit.backend import ANY, Expect, Record
from statekit.store import StateStore

__all__ = [
    "EXISTS",
    "IfMatch",
    "IfNoneMatch",
    "Precondition",
    "expect",
    "failed",
    "parse",
    "tagged",
    "tagged_json",
]


class _Exists(enum.Enum):
    EXISTS = "*"


EXISTS: Final = _Exists.EXISTS
Precondition = int | _Exists | None
"""What the conditional headers ask: a version, "the key exists", 0 (create-only), or nothing."""

IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='Write only if the head is this version: `"3"`; `*`: only if it exists.',
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(alias="If-None-Match", description="`*`: create only (the key has no live value)."),
]


def tagged(record: Record, response: Response) -> StateOut:
    """``record`` as a response body, with its version as the response's ``ETag``."""
    response.headers["ETag"] = f'"{record.version}"'
    return state_out(record)


def tagged_json(record: Record, status_code: int = 200, **headers: str) -> Response:
    """:func:`tagged` as a finished response: the route's ``response_model`` still
    documents the body, and FastAPI neither validates nor encodes it again."""
    headers["ETag"] = f'"{record.version}"'
    return Response(state_json(record), status_code, headers, "application/json")


_DIGITS = re.compile("[0-9]+")
_OPAQUE_TAG = re.compile("[\x21\x23-\x7e]*")
"""What may stand between the quotes of an ETag here: printable ASCII but ``"``."""


def parse(if_match: str | None, if_none_match: str | None) -> Precondition:
    """Read ``If-Match`` / ``If-None-Match`` (RFC 9110) into what a write expects.

    ``If-Match: "<version>"``: the head must be that version. ``If-Match: *``: the
    key must have a live value. ``If-None-Match: *``: it must not (create only).
    """
    if if_match is not None and if_none_match is not None:
        raise ApiError(400, "send If-Match or If-None-Match, not both", code="bad_precondition")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise ApiError(
                400,
                "on a write, If-None-Match supports only * (create only)",
                code="bad_precondition",
            )
        return 0
    if if_match is None:
        return None
    tag = if_match.strip()
    if tag == "*":
        return EXISTS
    if "," in tag:
        raise ApiError(400, "If-Match takes one ETag", code="bad_precondition")
    if tag.startswith("W/"):
        raise ApiError(
            400, 'If-Match needs a strong ETag, e.g. If-Match: "3"', code="bad_precondition"
        )
    quoted = len(tag) >= 2 and tag[0] == tag[-1] == '"'
    if quoted and _OPAQUE_TAG.fullmatch(tag[1:-1]):
        tag = tag[1:-1]
    elif quoted or not _DIGITS.fullmatch(tag):
        # Not str.isdigit(): it is true for "²" and other digits int() refuses.
        raise ApiError(
            400, f'If-Match {tag[:40]!r} is not an ETag, e.g. "3"', code="bad_precondition"
        )
    # An ETag this server never issued matches nothing: version 0 is never a live value.
    return int(tag) if _DIGITS.fullmatch(tag) and len(tag) < 19 and int(tag) > 0 else -1


def failed(key: str, precondition: Precondition, actual: int) -> ApiError:
    """The 412 of a write to ``key`` whose ``precondition`` does not hold at ``actual``."""
    if precondition == 0:
        message = f"{key!r} exists already (If-None-Match: *)"
    elif precondition is EXISTS:
        message = f"{key!r} has no live value (If-Match: *)"
    else:
        message = f"{key!r} is at version {actual}, not {precondition} (If-Match)"
    expected = precondition if isinstance(precondition, int) else None
    return ApiError(412, message, key=key, expected=expected, actual=actual)


async def expect(store: StateStore, key: str, precondition: Precondition) -> Expect:
    """The ``expect=`` of a write under ``precondition`` (412 when it cannot hold)."""
    if precondition is None:
        return ANY
    if precondition is EXISTS:
        head = await store.get(key)
        if head is None:
            raise failed(key, precondition, 0)
        return head.version
    assert isinstance(precondition, int)
    if precondition < 0:
        head = await store.get(key)
        raise failed(key, precondition, head.version if head else 0)
    return precondition

"""A store folder's journals: their names, their lines, and reading them for a watcher.

A journal generation is ``journal-<g>.jsonl``: one line per commit,
``{"seq":<commit number>,"records":[<record>, ...]}`` (:mod:`statekit_file.records`
gives a record's text). :class:`~statekit_file.folder.Folder` appends the lines;
:func:`changes` reads them for ``watch``, from a :class:`Cursor` on, across
generations, as long as the journal it stands in is kept (a checkpoint keeps the
last four).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statekit.backend import Record
from statekit.errors import BackendError, SerializationError
from statekit.kit import from_document
from statekit_file.files import complete_lines

__all__ = ["Cursor", "changes", "commit_line", "journal_name", "parse_line"]


def journal_name(generation: int) -> str:
    """The file name of a journal generation."""
    return f"journal-{generation:08d}.jsonl"


def commit_line(seq: int, texts: Sequence[str]) -> str:
    """The journal line of commit ``seq`` holding records of these texts."""
    return f'{{"seq":{seq},"records":[' + ",".join(texts) + "]}\n"


def parse_line(line: bytes, where: str) -> tuple[int, list[dict[str, Any]]]:
    """``(seq, record objects)`` of a complete journal line; SerializationError if bad."""
    try:
        obj = json.loads(line)
        seq, records = int(obj["seq"]), obj["records"]
        if not isinstance(records, list):
            raise TypeError("records is not a list")
        return seq, records
    except (ValueError, KeyError, TypeError) as exc:
        raise SerializationError(
            f"{where}: a complete journal line is not valid JSON ({exc}); the file was "
            "damaged outside statekit",
            backend="file",
        ) from exc


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a watcher stands: a journal generation, a byte offset in it, the last seq seen."""

    generation: int
    offset: int
    seq: int


def changes(
    root: Path, live: int, cursor: Cursor, prefix: str, most: int
) -> tuple[list[Record], Cursor]:
    """Commits after ``cursor`` to keys under ``prefix``, reading at most ``most`` lines
    of the journals up to the ``live`` generation. Call with the folder's lock held."""
    out: list[Record] = []
    gen, offset, seq = cursor.generation, cursor.offset, cursor.seq
    read = 0
    while read < most:
        path = root / journal_name(gen)
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError as exc:
            raise BackendError(
                f"{path}: this watcher fell more than four journal generations behind "
                "and missed commits; start a new watch",
                backend="file",
            ) from exc
        lines, _ = complete_lines(data)
        for text in lines[: most - read]:
            offset += len(text) + 1
            read += 1
            line_seq, records = parse_line(text, str(path))
            if line_seq <= seq:
                continue
            seq = line_seq
            out += (
                from_document(obj, backend="file", where=str(path))
                for obj in records
                if not isinstance(obj, dict) or str(obj.get("key", "")).startswith(prefix)
            )
        if read >= most or gen >= live:
            break
        gen, offset = gen + 1, 0
    return out, Cursor(gen, offset, seq)

"""The one redactor: keeps secrets (an API key, a URL's password and tokens) out of
errors, logs, responses and command output. Backends, the API and the CLI all use it."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

__all__ = ["RedactingFilter", "Redactor", "redact_url", "url_secrets"]

_KEY_PARAM = re.compile(r"(api_key=)[^&\s\"']*", re.IGNORECASE)


_SECRET_PARAMS = ("password", "token", "secret", "key", "auth")


def redact_url(url: str) -> str:
    """``url`` with its password and secret-looking query values replaced by ``***``.

    For logs, errors and ``doctor`` output.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        hidden = [
            (name, "***" if any(s in name.lower() for s in _SECRET_PARAMS) else value)
            for name, value in pairs
        ]
        if netloc == parts.netloc and hidden == pairs:
            return url
        query = "&".join(f"{name}={value}" for name, value in hidden)
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    except ValueError:
        return "<unparseable URL>"


def url_secrets(url: str) -> set[str]:
    """The password and the secret query values of ``url``: what redact_url hides."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return {url}
    found: set[str] = set()
    if password:
        found |= {password, unquote(password)}
    shown = parse_qsl(urlsplit(redact_url(url)).query, keep_blank_values=True)
    original = parse_qsl(parts.query, keep_blank_values=True)
    for (_, value), (_, hidden) in zip(original, shown, strict=False):
        if value and hidden == "***" and value != "***":
            found |= {value, quote(value, safe=""), quote_plus(value)}
    return found


class Redactor:
    """Replaces known secrets with ``***`` in text and in JSON-like data.

    :param secrets: literal secrets (the API key).
    :param urls: URLs whose passwords and secret query values are secrets too;
        a URL found whole in a text is shown redacted.
    """

    def __init__(self, secrets: Iterable[str] = (), urls: Iterable[str] = ()) -> None:
        self._urls = [u for u in urls if u]
        # (url, its redacted form), worked out once: text() runs on every access log line.
        self._shown = [(u, redact_url(u)) for u in self._urls]
        found = {s for s in secrets if s}
        for url in self._urls:
            found |= url_secrets(url)
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted(found, key=len, reverse=True)

    def text(self, text: str) -> str:
        """``text`` without any secret, and without the value of an ``api_key=`` parameter."""
        for url, shown in self._shown:
            if url in text:
                text = text.replace(url, shown)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _KEY_PARAM.sub(r"\1***", text)

    def data(self, value: Any) -> Any:
        """:meth:`text` applied to every string in JSON-like ``value``."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every log record's message and arguments.

    Installed on uvicorn's loggers by :func:`statekit.api.serve`: its access log
    prints request paths, and a WebSocket client may send the key as ``?api_key=``.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self._redactor.text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._redactor.text(a) if isinstance(a, str) else a for a in record.args
            )
        elif isinstance(record.args, Mapping):
            record.args = {
                k: self._redactor.text(v) if isinstance(v, str) else v
                for k, v in record.args.items()
            }
        return True

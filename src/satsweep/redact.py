"""Keep secrets out of logs: passwords and tokens in URLs become ``***``.

Storage and tracking URLs (``postgresql://user:secret@host/db``,
``https://token@host``) are logged as params, written into config artifacts and
printed in errors; every such place passes them through :func:`redact` first.

A value that is a whole URL is parsed with SQLAlchemy's URL parser, which (unlike
``urllib``) accepts the ``/``, spaces and other characters a database password
may hold. URLs inside free text (an exception message) are found by a pattern
that takes the password up to the last ``@`` that is followed by a host name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MASK = "***"
_SCHEME = r"[a-zA-Z][\w+.-]*://"
# scheme://user:password@host, the password possibly holding '/', ' ' or '@'
_PASSWORD = re.compile(
    rf"(?P<head>{_SCHEME}[^:/@\s]*:)(?P<password>[^\n]*?)@(?=[\w.\[\]-]+(?:[:/?#\s]|$))"
)
_TOKEN = re.compile(r"(?P<head>https?://)[^:/@\s]+@")  # https://TOKEN@host
_SECRET_KEY = r"[\w.-]*(?:password|passwd|pwd|token|secret|key|credential)[\w.-]*"
_SECRET_QUERY = re.compile(rf"(?i)(?P<head>[?&]{_SECRET_KEY}=)[^&\n]+")
_SECRET_NAME = re.compile(rf"(?i)^{_SECRET_KEY}$")
_WHOLE_URL = re.compile(rf"^{_SCHEME}\S")


def redact(text: str) -> str:
    """``text`` with the credentials of any URL in it masked."""
    if _WHOLE_URL.match(text) and "\n" not in text:
        return _redact_url(text)
    return _redact_free_text(text)


def _redact_free_text(text: str) -> str:
    text = _PASSWORD.sub(rf"\g<head>{MASK}@", text)
    text = _TOKEN.sub(rf"\g<head>{MASK}@", text)
    return _SECRET_QUERY.sub(rf"\g<head>{MASK}", text)


def _redact_url(url: str) -> str:
    """One URL, parsed: its password and secret query parameters masked."""
    if "@" not in url and "?" not in url:
        return url
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _redact_free_text(url)
    secret = {key: MASK for key in parsed.query if _SECRET_NAME.match(key)}
    if secret:
        parsed = parsed.update_query_dict(secret)
    if parsed.password is None and parsed.username and parsed.drivername.startswith("http"):
        parsed = parsed.set(username=MASK)  # https://TOKEN@host
    masked = parsed.render_as_string(hide_password=True)
    return _redact_free_text(masked)  # what the parser did not see as a password


def redact_tree(tree: Any) -> Any:
    """Every string in a nested structure of dicts and lists, redacted."""
    if isinstance(tree, str):
        return redact(tree)
    if isinstance(tree, Mapping):
        return {key: redact_tree(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return [redact_tree(value) for value in tree]
    return tree

"""Keep secrets out of logs: passwords and tokens in URLs become ``***``.

Storage and tracking URLs (``postgresql://user:secret@host/db``,
``https://token@host``) are logged as params, written into config artifacts and
printed in errors; every such place passes them through :func:`redact` first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# scheme://user:password@host  or  scheme://token@host
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*)(?::[^@/\s]*)?@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:password|token|secret|key)=)[^&\s]+")
MASK = "***"


def redact(text: str) -> str:
    """``text`` with the credentials of any URL in it masked."""

    def mask(match: re.Match[str]) -> str:
        user = match.group("user")
        has_password = ":" in match.group(0)[len(match.group("scheme")) :].rstrip("@")
        if has_password:
            return f"{match.group('scheme')}{user}:{MASK}@"
        if match.group("scheme").lower().startswith("http"):
            return f"{match.group('scheme')}{MASK}@"  # https://TOKEN@host
        return match.group(0)  # a database user name without a password

    return _SECRET_QUERY.sub(rf"\g<1>{MASK}", _CREDENTIALS.sub(mask, text))


def redact_tree(tree: Any) -> Any:
    """Every string in a nested structure of dicts and lists, redacted."""
    if isinstance(tree, str):
        return redact(tree)
    if isinstance(tree, Mapping):
        return {key: redact_tree(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return [redact_tree(value) for value in tree]
    return tree

"""The rules git URLs and refs must pass, wherever they come from: ndeploy's settings, a deploy
request in Redis, an rcontrol release.

Every value ends up as one element of a git argument list (never a shell), and is checked here
first so that nothing can pass for an option or escape the allowlist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "RequestError",
    "check_combination",
    "check_commit",
    "check_git_url",
    "check_ref",
    "url_allowed",
]

_COMMIT = re.compile(r"[0-9a-fA-F]{4,40}")
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+@-]{0,199}")
_CONTROL = re.compile(r"[\x00-\x20\x7f\\]")
_DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)|%2e", re.IGNORECASE)


class RequestError(ValueError):
    """A request field is missing or has a bad value; the message starts with the field name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def check_commit(value: str) -> str:
    if not _COMMIT.fullmatch(value):
        raise RequestError("commit", f"must be 4 to 40 hex digits (got {value!r})")
    return value.lower()


def check_ref(field: str, value: str) -> str:
    """A branch or tag name: letters, digits and ``._/+@-``, not starting with ``-`` or ``.``."""
    if not _REF.fullmatch(value) or ".." in value or value.endswith((".lock", "/", ".")):
        raise RequestError(field, f"not a usable git {field} name (got {value!r})")
    return value


def check_git_url(value: str) -> str:
    """A git URL with no whitespace, control characters, backslashes or ``..`` path segments.

    Dot segments are refused because git's HTTP transport would resolve them, and a URL that
    starts with an allowed prefix could then point outside it.
    """
    if not value:
        raise RequestError("git", "required: the git URL to deploy from")
    if value.startswith("-") or _CONTROL.search(value) or "::" in value.split("/", 1)[0]:
        raise RequestError("git", f"not an acceptable git URL (got {value!r})")
    path = value.split("://", 1)[-1]
    if _DOT_SEGMENT.search(path):
        raise RequestError("git", f"'.' or '..' path segments are not allowed (got {value!r})")
    return value


def check_combination(branch: str | None, commit: str | None, tag: str | None) -> None:
    if tag is not None and commit is not None:
        raise RequestError("tag", "give a tag or a commit, not both")
    if tag is not None and branch is not None:
        raise RequestError("tag", "give a tag or a branch, not both")


def url_allowed(url: str, prefixes: Iterable[str]) -> bool:
    """True when ``url`` starts with one of ``prefixes`` (end them with '/' to mean a directory)."""
    return any(prefix and url.startswith(prefix) for prefix in prefixes)

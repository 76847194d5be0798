"""A deploy request, as a requester writes it to ``<ns>:req:<id>``, and the checks it must pass.

Fields: ``git`` (required), ``branch`` (default: the repository's default branch), ``commit`` (hex,
4 to 40 digits), ``tag``. A tag names the exact revision, so it excludes ``branch`` and ``commit``;
``branch`` with ``commit`` checks the commit out and requires it to be on that branch.

Every value is checked by ``mpush.config.git``'s rules before it reaches git.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mpush.config.git import (
    RequestError,
    check_combination,
    check_commit,
    check_git_url,
    check_ref,
)

__all__ = ["DeployRequest", "RequestError"]


@dataclass(frozen=True)
class DeployRequest:
    """A checked request."""

    id: int
    git: str
    branch: str | None = None
    commit: str | None = None
    tag: str | None = None

    @classmethod
    def from_hash(cls, request_id: int, fields: Mapping[str, str]) -> DeployRequest:
        """Check the hash a requester wrote; RequestError names the bad field."""
        git = check_git_url(fields.get("git", "").strip())
        branch = _optional(fields, "branch")
        commit = _optional(fields, "commit")
        tag = _optional(fields, "tag")
        request = cls(
            id=request_id,
            git=git,
            branch=None if branch is None else check_ref("branch", branch),
            commit=None if commit is None else check_commit(commit),
            tag=None if tag is None else check_ref("tag", tag),
        )
        check_combination(request.branch, request.commit, request.tag)
        return request

    def to_hash(self) -> dict[str, str]:
        fields = {"git": self.git, "branch": self.branch, "commit": self.commit, "tag": self.tag}
        return {name: value for name, value in fields.items() if value is not None}

    @property
    def ref(self) -> str:
        """What was asked for: ``tag v1``, ``branch main @ 1a2b3c4``, ``default branch``."""
        if self.tag:
            return f"tag {self.tag}"
        where = f"branch {self.branch}" if self.branch else "default branch"
        return f"{where} @ {self.commit}" if self.commit else where


def _optional(fields: Mapping[str, str], name: str) -> str | None:
    value = fields.get(name, "").strip()
    return value or None

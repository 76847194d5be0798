"""The git steps of a deploy: clone, check out, and read back the commit that was deployed.

Values reach git only as separate arguments, as ``--branch=VALUE`` or after ``--``, and were checked
by ``request.py`` first; no shell is involved.
"""

from __future__ import annotations

from pathlib import Path

from mpush.orchestration.ndeploy.proc import StepError, run_step

__all__ = ["checkout", "clone", "current_branch", "head"]

_GIT = ("git", "-c", "advice.detachedHead=false", "-c", "core.hooksPath=/dev/null")


async def clone(url: str, dest: Path, *, ref: str | None, limit: float) -> None:
    """``git clone`` ``url`` into ``dest`` (which must not exist), at branch or tag ``ref``."""
    argv = [*_GIT, "clone", "--quiet", "--no-recurse-submodules"]
    if ref is not None:
        argv.append(f"--branch={ref}")
    await run_step("clone", [*argv, "--", url, str(dest)], limit=limit)


async def checkout(dest: Path, commit: str, *, branch: str | None, limit: float) -> None:
    """Check ``commit`` out (detached); with ``branch``, the commit must be on that branch."""
    await run_step(
        "checkout",
        [*_GIT, "-C", str(dest), "checkout", "--quiet", "--detach", commit, "--"],
        limit=limit,
    )
    if branch is not None:
        try:
            await run_step(
                "checkout",
                [*_GIT, "-C", str(dest), "merge-base", "--is-ancestor", "HEAD", f"origin/{branch}"],
                limit=limit,
            )
        except StepError:
            raise StepError("checkout", f"commit {commit} is not on branch {branch}") from None


async def head(dest: Path, *, limit: float) -> str:
    """The full commit id checked out in ``dest``."""
    output = await run_step(
        "checkout", [*_GIT, "-C", str(dest), "rev-parse", "--verify", "HEAD"], limit=limit
    )
    return output.strip()


async def current_branch(dest: Path, *, limit: float) -> str | None:
    """The branch checked out in ``dest``, or None when HEAD is detached (a tag or a commit)."""
    output = await run_step(
        "checkout",
        [*_GIT, "-C", str(dest), "rev-parse", "--abbrev-ref", "HEAD"],
        limit=limit,
    )
    name = output.strip()
    return None if name in ("", "HEAD") else name

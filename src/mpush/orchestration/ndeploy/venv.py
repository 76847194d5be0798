"""The Python steps of a deploy: a venv inside the deploy dir, and the package installed into it.

What gets installed: ``requirements.txt`` if the repository has one, then the repository itself
as a package if it has a ``pyproject.toml`` or ``setup.py``. A repository with neither is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mpush.orchestration.ndeploy.proc import StepError, run_step

__all__ = ["VENV_DIR", "InstallPlan", "create_venv", "install", "plan_install", "venv_python"]

VENV_DIR = ".venv"
_PIP_QUIET = ("--disable-pip-version-check", "--no-input", "--progress-bar", "off")


@dataclass(frozen=True)
class InstallPlan:
    requirements: Path | None
    package: bool


def venv_python(deploy_dir: Path) -> Path:
    return deploy_dir / VENV_DIR / "bin" / "python"


def plan_install(deploy_dir: Path) -> InstallPlan:
    """What to install from the checked-out repository; StepError when there is nothing."""
    requirements = deploy_dir / "requirements.txt"
    plan = InstallPlan(
        requirements=requirements if requirements.is_file() else None,
        package=(deploy_dir / "pyproject.toml").is_file() or (deploy_dir / "setup.py").is_file(),
    )
    if plan.requirements is None and not plan.package:
        raise StepError(
            "install", "nothing to install: no pyproject.toml, setup.py or requirements.txt"
        )
    return plan


async def create_venv(python: str, deploy_dir: Path, *, with_pip: bool, limit: float) -> None:
    argv = [python, "-m", "venv"]
    if not with_pip:
        argv.append("--without-pip")
    await run_step("venv", [*argv, str(deploy_dir / VENV_DIR)], limit=limit, what="venv")


async def install(
    deploy_dir: Path,
    plan: InstallPlan,
    *,
    pip_python: str | None,
    pip_args: Sequence[str],
    limit: float,
) -> None:
    """pip install the plan into the deploy's venv, with the venv's own pip, or with
    ``pip_python``'s pip aimed at the venv (``pip --python``) when ``pip_python`` is given."""
    target = str(venv_python(deploy_dir))
    pip = (
        [target, "-m", "pip"]
        if pip_python is None
        else [pip_python, "-m", "pip", "--python", target]
    )
    base = [*pip, "install", *_PIP_QUIET, *pip_args]
    if plan.requirements is not None:
        await run_step(
            "install",
            [*base, "-r", str(plan.requirements)],
            limit=limit,
            cwd=deploy_dir,
            what="pip install",
        )
    if plan.package:
        await run_step(
            "install", [*base, str(deploy_dir)], limit=limit, cwd=deploy_dir, what="pip install"
        )

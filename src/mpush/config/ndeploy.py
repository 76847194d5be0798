"""Settings of ndeploy's commands: serve, pop, deploy, list, rollback."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator

from mpush.config.base import CommonSettings
from mpush.config.git import (
    RequestError,
    check_combination,
    check_commit,
    check_git_url,
    check_ref,
)

__all__ = [
    "NdeployListSettings",
    "NdeployPopSettings",
    "NdeployRequestSettings",
    "NdeployRollbackSettings",
    "NdeployServeSettings",
    "NdeploySettings",
]


class NdeploySettings(CommonSettings):
    """ndeploy: deploys a Python package from git on a request in Redis."""

    service_namespace: str | None = Field(
        "demo:ndeploy",
        description="Namespace of requests, responses and the registry; hash-tag it on a Redis "
        "Cluster, e.g. {demo}:ndeploy.",
    )
    deploy_root: Path = Field(
        Path("~/.ndeploy"),
        description="Deploys go to <root>/<namespace, ':' as '-'>/<request id>.",
    )
    keep: int = Field(
        5, ge=1, description="Successful deploys kept; older ones are pruned, never current."
    )

    @model_validator(mode="after")
    def _ndeploy_namespace(self) -> NdeploySettings:
        namespace = self.service_namespace or ""
        if not namespace.strip():
            raise ValueError("service_namespace: ndeploy needs a namespace, e.g. demo:ndeploy")
        if "/" in namespace or namespace.strip(":{}.") == "":
            raise ValueError(f"service_namespace: {namespace!r} cannot name a deploy directory")
        if self.service_redis:
            raise ValueError(
                "service_redis: ndeploy keeps its registry beside its requests (a dead "
                "instance's claims are recovered atomically with a check of its registration)"
            )
        return self

    @property
    def namespace(self) -> str:
        assert self.service_namespace  # checked above
        return self.service_namespace

    @property
    def root(self) -> Path:
        return self.deploy_root.expanduser()


class NdeployServeSettings(NdeploySettings):
    """ndeploy serve: take deploy requests one after another until stopped."""

    cli_names: ClassVar[dict[str, str]] = {"pip_args": "pip_arg"}

    allow: list[str] = Field(
        [],
        description="A git URL prefix requests may use; repeat for several (end directory "
        "prefixes with '/'). Required.",
    )
    python: str | None = Field(
        None, description="Python that creates each deploy's venv (default: ndeploy's own)."
    )
    venv_pip: bool = Field(
        True,
        description="Seed pip into each venv and install with it; --no-venv-pip installs with "
        "the --python interpreter's pip (pip --python), which is faster.",
    )
    pip_args: list[str] = Field(
        [], description="An extra pip install argument, e.g. --pip-arg=--no-index (repeatable)."
    )
    clone_timeout: float = Field(300.0, gt=0, description="Seconds git clone + checkout may take.")
    install_timeout: float = Field(
        600.0, gt=0, description="Seconds creating the venv, and then installing, may take each."
    )
    max_attempts: int = Field(
        3, ge=1, description="Claims of one request before it is answered with an error."
    )
    recover_interval: float = Field(
        5.0, gt=0, description="Seconds between sweeps for requests held by dead instances."
    )
    notify_expire: int = Field(
        3600, ge=1, description="Seconds the <ns>:res:<id>:done notification is kept."
    )

    @model_validator(mode="after")
    def _allowlist(self) -> NdeployServeSettings:
        if not [prefix for prefix in self.allow if prefix.strip()]:
            raise ValueError(
                "allow: give at least one git URL prefix requests may use, "
                "e.g. --allow https://github.com/yourorg/"
            )
        return self


class NdeployPopSettings(NdeployServeSettings):
    """ndeploy pop WAIT: take one request within WAIT seconds, deploy it, exit.

    Exit 0 when deployed, 1 when the deploy failed (the error is in the response), 124 when no
    request came within WAIT seconds.
    """

    wait: float = Field(60.0, gt=0, description="Seconds to wait for a request.")


class NdeployRequestSettings(NdeploySettings):
    """ndeploy deploy GIT_URL: submit a deploy request and wait for its response.

    The last line printed is the deploy dir. Exit 0 when deployed, 1 when the deploy failed,
    124 when no response came within --wait seconds (the request stays queued).
    """

    git: str = Field(..., description="The git URL to deploy from.")
    branch: str | None = Field(None, description="Branch (default: the repository's default).")
    commit: str | None = Field(None, description="Commit to check out (hex, 4 to 40 digits).")
    tag: str | None = Field(None, description="Tag to deploy (instead of branch and commit).")
    wait: float = Field(900.0, gt=0, description="Seconds to wait for the response.")

    @model_validator(mode="after")
    def _request(self) -> NdeployRequestSettings:
        try:
            check_git_url(self.git)
            if self.branch is not None:
                check_ref("branch", self.branch)
            if self.tag is not None:
                check_ref("tag", self.tag)
            if self.commit is not None:
                check_commit(self.commit)
            check_combination(self.branch, self.commit, self.tag)
        except RequestError as exc:
            raise ValueError(str(exc)) from None
        return self


class NdeployListSettings(NdeploySettings):
    """ndeploy list: this host's deploys of the namespace, their commits, and which is current."""

    cli_names: ClassVar[dict[str, str]] = {"as_json": "json"}

    as_json: bool = Field(False, description="Print JSON.")


class NdeployRollbackSettings(NdeploySettings):
    """ndeploy rollback [ID]: switch current back to the previous successful deploy (or to ID)."""

    to: int | None = Field(None, ge=1, description="The deploy to switch to.")

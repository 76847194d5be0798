"""One namespace's deploys on this host: numbered deploy dirs, their records, and ``current``.

::

    <root>/<ns-dir>/            ns-dir: the namespace with ':' as '-' and without '{}'
        <id>/                   the clone, checked out; its venv in <id>/.venv
        <id>.json               the record of a successful deploy, written last: its presence is
                                what makes <id> a successful deploy
        current -> <id>         relative symlink to the live deploy, switched atomically
        .lock                   serialises switch / prune / rollback between processes of a host
        .<id>.lock              held while <id> is being deployed
        .trash-<id>-<random>/   a dir moved aside to be removed (a failed or abandoned deploy)

``current`` is switched by making a symlink under a temporary name and renaming it over
``current`` (``rename(2)`` is atomic): a reader sees the old deploy or the new one, never neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["DeployRecord", "DeployRoot", "LayoutError", "namespace_dir"]

log = logging.getLogger(__name__)

CURRENT = "current"


class LayoutError(Exception):
    """A rollback or switch that cannot be done (no such deploy, nothing earlier)."""


def namespace_dir(namespace: str) -> str:
    """``demo:ndeploy`` → ``demo-ndeploy``; ``{demo}:ndeploy`` → ``demo-ndeploy``."""
    return namespace.replace("{", "").replace("}", "").replace(":", "-")


@dataclass(frozen=True)
class DeployRecord:
    """What ``<id>.json`` holds: the request, what was deployed, and when (Redis TIME)."""

    id: int
    git: str
    branch: str | None
    commit: str | None
    tag: str | None
    actual_commit: str
    deploy_dir: str
    cloned: str
    installed: str
    service: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DeployRecord:
        data: dict[str, Any] = json.loads(text)

        def optional(name: str) -> str | None:
            value = data.get(name)
            return None if value is None else str(value)

        def required(name: str) -> str:
            value = data.get(name)
            if value is None:
                raise ValueError(f"no {name!r} in the record")
            return str(value)

        return cls(
            id=int(required("id")),
            git=required("git"),
            branch=optional("branch"),
            commit=optional("commit"),
            tag=optional("tag"),
            actual_commit=required("actual_commit"),
            deploy_dir=required("deploy_dir"),
            cloned=required("cloned"),
            installed=required("installed"),
            service=required("service"),
        )


class DeployRoot:
    """The directory of one namespace's deploys. Creating it does no I/O."""

    def __init__(self, root: Path, namespace: str) -> None:
        self.path = root / namespace_dir(namespace)

    def deploy_dir(self, deploy_id: int) -> Path:
        return self.path / str(deploy_id)

    def record_path(self, deploy_id: int) -> Path:
        return self.path / f"{deploy_id}.json"

    @property
    def current_link(self) -> Path:
        return self.path / CURRENT

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    # -- reading ------------------------------------------------------------------------------

    def records(self) -> list[DeployRecord]:
        """The successful deploys, oldest first."""
        found: list[DeployRecord] = []
        if not self.path.is_dir():
            return found
        for path in self.path.glob("*.json"):
            if not path.stem.isdecimal():
                continue
            try:
                found.append(DeployRecord.from_json(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping unreadable deploy record %s: %s", path, exc)
        return sorted(found, key=lambda record: record.id)

    def record(self, deploy_id: int) -> DeployRecord | None:
        """The record of ``deploy_id`` if it was deployed successfully here."""
        try:
            return DeployRecord.from_json(self.record_path(deploy_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("unreadable deploy record %s: %s", self.record_path(deploy_id), exc)
            return None

    def current_id(self) -> int | None:
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        name = Path(target).name
        return int(name) if name.isdecimal() else None

    # -- writing ------------------------------------------------------------------------------

    def write_record(self, record: DeployRecord) -> None:
        """Write ``<id>.json`` atomically (temporary file, fsync, rename)."""
        final = self.record_path(record.id)
        temp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
        with temp.open("w", encoding="utf-8") as out:
            out.write(record.to_json())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, final)

    def switch(self, deploy_id: int) -> None:
        """Point ``current`` at ``deploy_id``, atomically."""
        temp = self.path / f".{CURRENT}.{secrets.token_hex(4)}.tmp"
        os.symlink(str(deploy_id), temp)
        try:
            os.replace(temp, self.current_link)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise

    def discard(self, deploy_id: int) -> None:
        """Remove a deploy that is not (or no longer) wanted: its record first, then its dir."""
        with contextlib.suppress(FileNotFoundError):
            self.record_path(deploy_id).unlink()
        directory = self.deploy_dir(deploy_id)
        if not directory.exists() and not directory.is_symlink():
            return
        # Moved aside first: a straggler still writing by relative path writes into the trash.
        trash = self.path / f".trash-{deploy_id}-{secrets.token_hex(4)}"
        os.replace(directory, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def prune(self, keep: int) -> list[int]:
        """Remove successful deploys beyond the newest ``keep``, never ``current``; return ids."""
        with self.lock():
            current = self.current_id()
            records = self.records()
            kept = {record.id for record in records[-keep:]}
            removed = [r.id for r in records if r.id not in kept and r.id != current]
            for deploy_id in removed:
                self.discard(deploy_id)
                with contextlib.suppress(FileNotFoundError):
                    (self.path / f".{deploy_id}.lock").unlink()
            for trash in self.path.glob(".trash-*"):
                shutil.rmtree(trash, ignore_errors=True)
        return removed

    def rollback(self, to: int | None = None) -> tuple[int | None, int]:
        """Switch ``current`` to ``to``, or to the newest successful deploy older than current.

        Returns (previous current, new current). LayoutError when there is nothing to switch to.
        """
        with self.lock():
            current = self.current_id()
            ids = [record.id for record in self.records()]
            if to is not None:
                if to not in ids:
                    raise LayoutError(f"deploy {to} is not a successful deploy in {self.path}")
                target = to
            elif current is None:
                raise LayoutError(f"no current deploy in {self.path} to roll back from")
            else:
                earlier = [i for i in ids if i < current]
                if not earlier:
                    raise LayoutError(
                        f"no successful deploy older than {current} in {self.path} to roll back to"
                    )
                target = earlier[-1]
            self.switch(target)
        return current, target

    # -- locks --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The namespace-wide lock of this host (brief: held only while files are renamed)."""
        self.ensure()
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    async def lock_deploy(self, deploy_id: int, *, within: float) -> int:
        """Take ``.<id>.lock``, waiting up to ``within`` s for another process to let go.

        Returns the file descriptor to hand to ``unlock``. TimeoutError when it stays held.
        """
        self.ensure()
        fd = os.open(self.path / f".{deploy_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            async with asyncio.timeout(within):
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        return fd
                    except BlockingIOError:
                        await asyncio.sleep(0.1)
        except BaseException:
            os.close(fd)
            raise

    def unlock(self, fd: int) -> None:
        # The lock file stays: unlinking it could let a waiter lock the old inode while a
        # newcomer locks a new file of the same name. prune removes those of pruned deploys.
        os.close(fd)

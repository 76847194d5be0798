"""Real git repositories for the ndeploy tests, made with the git command in a temporary dir.

``hello``: a tiny package with no dependencies and an in-tree PEP 517 backend (``requires = []``),
so pip builds and installs it with no index and no network. Its history::

    main:     v1 (VERSION "1", tagged v1) ── v2 (VERSION "2")      ← default branch
    feature:                                  └── v3 (VERSION "3")

The backend waits while the file named by HELLO_BUILD_GATE is missing (touching ``<gate>.waiting``
first), so a test can hold a deploy inside its install step for as long as it needs.

``broken``: a pyproject naming a build backend that does not exist: its install fails.

``make_handler_repo``: a package of HTTP handlers for rcontrol's git releases: ``rc_site.hello``
answers "v1" at tag v1; at tag v2 the module raises as it is imported (a release that crashes).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HandlerRepo", "Repos", "make_handler_repo", "make_repos"]

_BACKEND = '''\
"""A PEP 517 backend that needs nothing: packs src/ into a wheel."""
import base64, hashlib, os, pathlib, time, zipfile

NAME, VERSION = "hello_ndeploy", "0.1.0"
DIST = f"{NAME}-{VERSION}.dist-info"


def _gate():
    gate = os.environ.get("HELLO_BUILD_GATE")
    if gate:
        pathlib.Path(gate + ".waiting").touch()
        while not os.path.exists(gate):
            time.sleep(0.05)


def _record(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _gate()
    files = {
        p.relative_to("src").as_posix(): p.read_bytes() for p in pathlib.Path("src").rglob("*.py")
    }
    meta = f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n"
    files[f"{DIST}/METADATA"] = meta.encode()
    files[f"{DIST}/WHEEL"] = (
        b"Wheel-Version: 1.0\\nGenerator: wheelmaker\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    )
    record = [_record(p, d) for p, d in files.items()] + [f"{DIST}/RECORD,,"]
    files[f"{DIST}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(pathlib.Path(wheel_directory) / name, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return name
'''

_PYPROJECT = """\
[build-system]
requires = []
build-backend = "wheelmaker"
backend-path = ["_build"]

[project]
name = "hello-ndeploy"
version = "0.1.0"
"""

_BROKEN_PYPROJECT = """\
[build-system]
requires = []
build-backend = "no_such_backend"

[project]
name = "broken-ndeploy"
version = "0.1.0"
"""


@dataclass(frozen=True)
class Repos:
    base: Path
    hello: Path
    broken: Path
    commits: dict[str, str]  # "v1", "v2", "v3" → full commit id

    def url(self, repo: Path) -> str:
        return repo.as_uri()

    @property
    def prefix(self) -> str:
        """An allowlist prefix covering every repository here."""
        return self.base.as_uri() + "/"


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        [
            "git",
            "-c",
            "user.name=ndeploy tests",
            "-c",
            "user.email=tests@example.invalid",
            "-c",
            "commit.gpgsign=false",
            "-C",
            str(repo),
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def make_repos(base: Path) -> Repos:
    hello = base / "hello"
    hello.mkdir(parents=True)
    _git(hello, "init", "--quiet", "--initial-branch=main")
    commits = {
        "v1": _commit(
            hello,
            {
                "pyproject.toml": _PYPROJECT,
                "_build/wheelmaker.py": _BACKEND,
                "src/hello/__init__.py": 'VERSION = "1"\n',
            },
            "v1",
        )
    }
    _git(hello, "tag", "v1")
    commits["v2"] = _commit(hello, {"src/hello/__init__.py": 'VERSION = "2"\n'}, "v2")
    _git(hello, "checkout", "--quiet", "-b", "feature")
    commits["v3"] = _commit(hello, {"src/hello/__init__.py": 'VERSION = "3"\n'}, "v3")
    _git(hello, "checkout", "--quiet", "main")

    broken = base / "broken"
    broken.mkdir()
    _git(broken, "init", "--quiet", "--initial-branch=main")
    _commit(broken, {"pyproject.toml": _BROKEN_PYPROJECT, "broken.py": ""}, "broken")
    return Repos(base=base, hello=hello, broken=broken, commits=commits)


@dataclass(frozen=True)
class HandlerRepo:
    path: Path

    @property
    def url(self) -> str:
        return self.path.as_uri()

    @property
    def prefix(self) -> str:
        return self.path.parent.as_uri() + "/"


_HANDLERS_V1 = """\
from mpush.http import Request, Response


def hello(request: Request) -> Response:
    return Response.text(request.id, "v1\\n")
"""

_HANDLERS_V2 = """\
raise RuntimeError("v2 is broken")
"""


def make_handler_repo(base: Path) -> HandlerRepo:
    repo = base / "site"
    repo.mkdir(parents=True)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    files = {
        "pyproject.toml": _PYPROJECT,
        "_build/wheelmaker.py": _BACKEND,
        "src/rc_site/__init__.py": _HANDLERS_V1,
    }
    _commit(repo, files, "v1")
    _git(repo, "tag", "v1")
    _commit(repo, {"src/rc_site/__init__.py": _HANDLERS_V2}, "v2")
    _git(repo, "tag", "v2")
    return HandlerRepo(repo)

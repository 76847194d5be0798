"""The map in docs/architecture.md, kept true: imports flow one way, every Redis key is built in
keys.py, and only mpush.http.messages decodes the HTTP message contract."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "mpush"

# Lowest first. A module may import from its own layer or a lower one, never a higher one.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("mpush", "errors", "exits", "keys", "connection", "retry", "epoch")),
    ("config", ("config",)),
    ("runtime", ("runtime",)),
    ("http", ("http", "status")),
    ("engines", ("services", "orchestration", "consumer")),
    ("face", ("cli", "demo", "__main__")),
]
_RANK = {top: rank for rank, (_, tops) in enumerate(LAYERS) for top in tops}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every mpush module ``name`` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module == "mpush" or module.startswith("mpush.")}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mpush"


def _family(module: str) -> str:
    """``services.hfiler``, ``services.movers``: a service or a family of services."""
    return ".".join(module.split(".")[1:3])


def _existing(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (SRC / relative).with_suffix(".py").exists() or (SRC / relative).is_dir()


def test_every_module_is_on_the_map() -> None:
    unplaced = {_top(name) for name, _ in _modules()} - set(_RANK)
    assert not unplaced, f"add {sorted(unplaced)} to a layer here and in docs/architecture.md"


def test_imports_flow_one_way() -> None:
    wrong: list[str] = []
    for name, path in _modules():
        for imported in _imports(name, path):
            if not _existing(imported):
                continue  # a name imported from a module, not a module
            low, high = _RANK[_top(imported)], _RANK[_top(name)]
            if low > high:
                wrong.append(f"{name} ({LAYERS[high][0]}) imports {imported} ({LAYERS[low][0]})")
    assert not wrong, "\n".join(wrong)


def test_services_and_orchestration_stand_apart() -> None:
    """A service never imports another service; services and orchestration never each other."""
    wrong: list[str] = []
    for name, path in _modules():
        for imported in _imports(name, path):
            if not _existing(imported) or imported in ("mpush.services", "mpush.orchestration"):
                continue
            mine, theirs = _top(name), _top(imported)
            if {mine, theirs} == {"services", "orchestration"}:
                wrong.append(f"{name} imports {imported}")
            elif mine == theirs == "services" and _family(name) != _family(imported):
                wrong.append(f"{name} imports another service: {imported}")
    assert not wrong, "\n".join(wrong)


def test_the_checks_above_can_fail() -> None:
    """The import reader sees relative, nested and aliased imports (else the tests prove little)."""
    sample = SRC / "runtime" / "runner.py"
    assert "mpush.runtime.lifecycle" in _imports("mpush.runtime.runner", sample)
    assert _RANK["cli"] > _RANK["runtime"]


# f-strings that name a Redis key: "{prefix}:word", "{ns}:{id}", "{key}:bad" …
_KEY_PATTERN = re.compile(r"""f["'][^"']*\{[^}]+\}:(?:\{|[a-z])""")
# f-strings of that shape that are not keys, each with what it is.
_NOT_KEYS = {
    'f"{METRIC}:route:': "a metric name (a field of ServiceKeys.metrics)",
    ":{port}": "host:port",
    ":{node.port}": "host:port",
    ":{self._port}": "host:port",
    ":{settings.metrics_port}": "host:port",
    ":{kwargs.get('port'": "host:port",
    ":{os.getpid()}": "a lease owner's name, host:pid",
}


def test_redis_keys_are_built_in_keys_py_only() -> None:
    found: list[str] = []
    for name, path in _modules():
        if name == "mpush.keys":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _KEY_PATTERN.search(line) and not any(ok in line for ok in _NOT_KEYS):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
            if re.search(r"""["']:bad["']""", line):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not found, "build these keys with a function of mpush.keys:\n" + "\n".join(found)


# Where JSON is read outside the message contract, and what is read there.
_JSON_READERS = {
    "mpush.http.messages": "the HTTP message contract",
    "mpush.http.correlation": "registrations it wrote itself (not messages)",
    "mpush.http.routes": "a route given as JSON in a setting or in <ns>:routes",
    "mpush.services.hrender": "a request's JSON body, data for a template",
    "mpush.runtime.tracking": "meta.id of a tracked mpush message (not an HTTP message)",
    "mpush.services.vpush.relay": "an mpush message given provenance (not an HTTP message)",
    "mpush.config.base": "a JSON config file or list setting",
    "mpush.orchestration.ndeploy.layout": "a deploy record on disk",
}


@pytest.mark.parametrize("call", ["json.loads", "orjson.loads"])
def test_only_the_contract_decodes_messages(call: str) -> None:
    readers = {
        name
        for name, path in _modules()
        if re.search(rf"\b{re.escape(call)}\(", path.read_text(encoding="utf-8"))
    }
    unexpected = readers - set(_JSON_READERS)
    assert not unexpected, f"{sorted(unexpected)} decode JSON: use mpush.http.messages"


def test_every_module_is_in_docs_architecture() -> None:
    page = (SRC.parent.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = []
    for _, path in _modules():
        if path.name in ("__init__.py", "__main__.py"):
            continue
        relative = path.relative_to(SRC)
        shown = f"`{relative}`" in page or any(
            f"`{relative.parent}/`" in line and f"`{path.name}`" in line
            for line in page.splitlines()
        )
        if not shown:
            missing.append(str(relative))
    assert not missing, f"docs/architecture.md does not show {missing}"

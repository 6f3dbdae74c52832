"""The layering rules of DESIGN.md, checked on the source: a lower layer never imports a higher
one, and core/ and wire/ stay sans-I/O (no sockets, files, clocks, threads or global random)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "chorusdb"

# Lower rank = lower layer. A module may import its own package or strictly lower ranks.
RANKS = {
    "limits": 0, "replies": 0, "__init__": 0,
    "core": 1, "wire": 1,
    "storage": 2, "net": 2, "client": 2, "verify": 2,
    "server": 3, "sim": 3,
    "bench": 4, "cli": 5, "__main__": 6,
}
SANS_IO_PACKAGES = ("core", "wire")
FORBIDDEN_IN_SANS_IO = {"asyncio", "socket", "sqlite3", "time", "os", "threading", "logging",
                        "subprocess", "selectors", "datetime", "uuid", "secrets"}
RANDOM_MODULE_FUNCTIONS = {"random", "randint", "choice", "shuffle", "uniform", "sample",
                           "randrange", "getrandbits", "seed", "expovariate", "gauss", "choices"}


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0].removesuffix(".py")


def imported_modules(tree: ast.AST) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_layer_is_ranked():
    unranked = {layer_of(p) for p in SOURCES} - RANKS.keys()
    assert not unranked, f"give these packages a rank in RANKS: {sorted(unranked)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_respect_layers(path: Path):
    layer = layer_of(path)
    tree = ast.parse(path.read_text(), str(path))
    for module, line in imported_modules(tree):
        if module == "chorusdb" or not module.startswith("chorusdb."):
            continue
        target = module.split(".")[1]
        if target == layer:
            continue
        assert RANKS[target] < RANKS[layer], (
            f"{path.relative_to(PACKAGE)}:{line}: layer '{layer}' (rank {RANKS[layer]}) imports "
            f"'{module}' (rank {RANKS[target]}), a layer that is not below it")


SANS_IO_SOURCES = [p for p in SOURCES if layer_of(p) in SANS_IO_PACKAGES]


@pytest.mark.parametrize("path", SANS_IO_SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_and_wire_are_sans_io(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for module, line in imported_modules(tree):
        assert module.split(".")[0] not in FORBIDDEN_IN_SANS_IO, (
            f"{path.relative_to(PACKAGE)}:{line} imports {module}: core/ and wire/ must stay "
            "sans-I/O (time and randomness come in as arguments)")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "random":
            bad = {a.name for a in node.names} & RANDOM_MODULE_FUNCTIONS
            assert not bad, f"{path.name}:{node.lineno} imports module-level random {bad}"
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "random" and node.attr in RANDOM_MODULE_FUNCTIONS):
            raise AssertionError(f"{path.relative_to(PACKAGE)}:{node.lineno} calls "
                                 f"random.{node.attr}: pass a seeded random.Random in instead")


def test_the_checker_catches_a_violation(tmp_path):
    """The rule above can fail: a sans-I/O module importing time is flagged."""
    tree = ast.parse("import time\nfrom random import randint\n")
    modules = [m for m, _ in imported_modules(tree)]
    assert "time" in modules and modules[0].split(".")[0] in FORBIDDEN_IN_SANS_IO

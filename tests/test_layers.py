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
    "bench": 4, "chaos": 4, "cli": 5, "__main__": 6,
}
# The root package is the public face (``chorusdb.Client``): it may reach the client, lazily (in
# its module ``__getattr__``), so importing any layer never loads redis-py along the way.
LAZY_FACADE_IMPORTS = {"__init__": {"client"}}
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


def top_level_lines(tree: ast.Module) -> set[int]:
    """The lines of the module's own statements (not those inside functions)."""
    return {node.lineno for node in tree.body}


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
        if target in LAZY_FACADE_IMPORTS.get(layer, ()):
            assert line not in top_level_lines(tree), (
                f"{path.relative_to(PACKAGE)}:{line}: import {module} lazily, inside a function")
            continue
        assert RANKS[target] < RANKS[layer], (
            f"{path.relative_to(PACKAGE)}:{line}: layer '{layer}' (rank {RANKS[layer]}) imports "
            f"'{module}' (rank {RANKS[target]}), a layer that is not below it")


def sans_io_violations(tree: ast.AST, where: str) -> list[str]:
    """What in a module breaks the sans-I/O rule of core/ and wire/."""
    found = []
    for module, line in imported_modules(tree):
        if module.split(".")[0] in FORBIDDEN_IN_SANS_IO:
            found.append(f"{where}:{line} imports {module}: core/ and wire/ must stay sans-I/O "
                         "(time and randomness come in as arguments)")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "random":
            bad = {a.name for a in node.names} & RANDOM_MODULE_FUNCTIONS
            if bad:
                found.append(f"{where}:{node.lineno} imports module-level random {sorted(bad)}")
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "random" and node.attr in RANDOM_MODULE_FUNCTIONS):
            found.append(f"{where}:{node.lineno} calls random.{node.attr}: pass a seeded "
                         "random.Random in instead")
    return found


SANS_IO_SOURCES = [p for p in SOURCES if layer_of(p) in SANS_IO_PACKAGES]


@pytest.mark.parametrize("path", SANS_IO_SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_and_wire_are_sans_io(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    assert sans_io_violations(tree, str(path.relative_to(PACKAGE))) == []


def test_the_sans_io_rule_flags_clocks_sockets_and_global_random():
    source = ("import time\nfrom asyncio import sleep\nfrom random import randint\n"
              "import random\nx = random.random()\nrng = random.Random(7)\n")
    found = sans_io_violations(ast.parse(source), "example.py")
    assert len(found) == 4, found
    assert any("random.random" in f for f in found)
    assert sans_io_violations(ast.parse("import random\nrng = random.Random(7)\n"), "ok") == []

"""The layering of docs/architecture.md: each package imports only from its own layer or the layers
below it (a stage never reaches back up the chain), and no import circle between gencraft's modules.
Imports inside functions count too: they hide a circle, they do not remove it."""

from __future__ import annotations

import ast
from pathlib import Path

import gencraft

SRC = Path(gencraft.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the gencraft modules it imports (``from pkg import sub`` names the submodule)."""

    def resolve(name: str) -> str:
        while name not in mods and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gencraft"):
                targets = [resolve(f"{node.module}.{a.name}") for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names if a.name.startswith("gencraft")]
            edges[name].update(t for t in targets if t != name)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_between_modules():
    assert _cycles(_imports(_modules())) == []


# The layers, lowest first (docs/architecture.md, "Layers"); the root package ``gencraft`` (the
# public API, which imports everything lazily) is outside them.
LAYERS = [
    {"errors", "io", "paths", "config", "audio", "threads", "cbuild", "limits", "schemas"},
    {"music"},
    {"tokenize"},
    {"data"},
    {"models"},
    {"runs"},
    {"generate", "post"},
    {"train"},
    {"backends", "export"},
    {"guard"},
    {"library"},
    {"apps", "jobs"},
    {"server", "cli", "__main__"},
]

# Imports that reach up a layer today, each with what removes it. Keep this list short and shrinking.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: package {top!r} is in no layer; add it to LAYERS and docs/architecture.md")


def test_every_import_goes_down_the_layers():
    upward = []
    for a, targets in _imports(_modules()).items():
        if a == "gencraft":
            continue
        for b in targets:
            if b == "gencraft" or _layer(b) <= _layer(a):
                continue
            if (a, ".".join(b.split(".")[:2])) not in KNOWN_UPWARD:
                upward.append(f"{a} -> {b}")
    assert upward == []

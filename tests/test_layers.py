"""The layering of docs/architecture.md: each package imports only from its own layer or the layers
below it (a stage never reaches back up the chain), and no import circle between gencraft's modules.
Imports inside functions count too: they hide a circle, they do not remove it."""

from __future__ import annotations

import ast
import subprocess
import sys
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


# Modules that import without torch: `gencraft --help`, a data-prepare worker, a job worker before it
# knows its job and the library must not pay for it (importing torch takes 1.5-5 s on these machines
# and ~200 MB a process). Whole packages end with a dot; data.speech reads audio with torch.
LIGHT = (
    "gencraft", "gencraft.errors", "gencraft.io", "gencraft.paths", "gencraft.config", "gencraft.threads",
    "gencraft.cbuild", "gencraft.cli.", "gencraft.music.", "gencraft.tokenize.", "gencraft.post.",
    "gencraft.library.", "gencraft.jobs.", "gencraft.apps", "gencraft.apps._common",
    "gencraft.train", "gencraft.train.card", "gencraft.train.metrics",
    "gencraft.data.",
)
HEAVY_INSIDE_LIGHT = {"gencraft.data.speech"}


def _light(module: str) -> bool:
    if module in HEAVY_INSIDE_LIGHT or ".migrations" in module or module.endswith("__main__"):
        return False
    return any(module == p or (p.endswith(".") and (module + ".").startswith(p)) for p in LIGHT)


def _inner_imports(mods: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(module, the gencraft modules it names, line) for every import statement inside a function."""
    out = []
    for name, path in mods.items():
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gencraft"):
                    names = [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names if a.name.startswith("gencraft")]
                else:
                    continue
                targets = []
                for t in names:
                    while t not in mods and "." in t:
                        t = t.rsplit(".", 1)[0]
                    targets.append(t)
                if targets:
                    out.append((name, targets, node.lineno))
    return out


def test_imports_sit_at_module_top_unless_they_keep_torch_out():
    """An import inside a function hides the module graph; the one reason to pay that is measured:
    a light module (above) reaching a module that loads torch."""
    mods = _modules()
    hidden = [f"{m}:{line} imports {', '.join(ts)}" for m, ts, line in _inner_imports(mods)
              if not (_light(m) and not all(_light(t) for t in ts))]
    assert hidden == [], "move these imports to the module top:\n" + "\n".join(hidden)


def test_light_modules_import_without_torch():
    light = sorted(m for m in _modules() if _light(m))
    code = ("import sys\n" + "".join(f"import {m}\n" for m in light)
            + "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"a light module loads {out.stdout.strip()}: keep that import lazy"

"""Tile maps learned from example maps, checked playable.

A map is a text grid, one character per tile (``#`` wall, ``.`` floor, ``S`` start, ``G`` goal,
``~`` water...). :class:`TileModel` learns which tile follows each local neighbourhood in the
examples -- a Markov chain over tiles in scanline order whose context is the four already-placed
neighbours (left, up-left, up, up-right), backing off to smaller contexts for neighbourhoods
never seen -- so generated maps keep the examples' local patterns (wall runs, corridors, borders:
the map's edge is a context symbol of its own). When every example closes its outer ring with
blocking tiles, generated maps keep it closed (:func:`closed_border`): no door or floor on the edge.

A generated map is then made *playable*: ``S`` and ``G`` are placed on walkable tiles far apart in
the biggest walkable region; :func:`check_playable` searches a path between them (4-neighbour
moves over tiles not in ``blocking``). When none exists, :func:`repair` carves the cheapest
corridor (fewest blocking tiles turned to floor) if it costs at most ``max_carve`` tiles; otherwise
the result says ``playable=False`` with the reason -- an unplayable map is never returned as playable.
"""

from __future__ import annotations

import heapq
import os
import random
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gencraft.errors import DataError, UsageError
from gencraft.guard.tournament import grid_context

EDGE = "\0"  # the outside of the map, as a context symbol
START, GOAL = "S", "G"
DEFAULT_BLOCKING = "#~^T"
Grid = list[list[str]]

__all__ = ["MapResult", "PlayReport", "TileModel", "check_playable", "closed_border", "generate_map", "load_maps",
           "parse_map", "pattern_coverage", "repair"]


def parse_map(text: str, *, source: str = "map") -> Grid:
    """A text grid -> rows of tiles. Ragged rows are padded with the map's most common tile."""
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise DataError(f"{source}: empty map; give a text grid, one character per tile", param="examples")
    width = max(len(ln) for ln in lines)
    fill = Counter("".join(lines)).most_common(1)[0][0]
    return [list(ln.ljust(width, fill)) for ln in lines]


def load_maps(paths: Iterable[str | os.PathLike[str]]) -> list[Grid]:
    """Read example maps: files, or folders of ``*.txt`` (a file may hold several maps split by
    blank lines)."""
    grids: list[Grid] = []
    for p in map(Path, paths):
        files = sorted(p.glob("*.txt")) if p.is_dir() else [p]
        if not p.exists():
            raise UsageError(f"--examples {p}: not found", param="examples")
        for f in files:
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{f}: not UTF-8 text; a map is a text grid", param="examples") from None
            for block in text.replace("\r\n", "\n").split("\n\n"):
                if block.strip():
                    grids.append(parse_map(block, source=str(f)))
    if not grids:
        raise DataError("no example maps found; give .txt files with one character per tile", param="examples")
    return grids


def render(grid: Grid) -> str:
    return "\n".join("".join(row) for row in grid) + "\n"


def _at(grid: Grid, y: int, x: int) -> str:
    if 0 <= y < len(grid) and 0 <= x < len(grid[0]):
        return grid[y][x]
    return EDGE


def _context(grid: Grid, y: int, x: int, width: int, height: int) -> tuple[str, ...]:
    """Left, up-left, up, up-right neighbours, plus whether the right / bottom edge is next."""
    edges = ("R" if x == width - 1 else "") + ("B" if y == height - 1 else "")
    return (_at(grid, y, x - 1), _at(grid, y - 1, x - 1), _at(grid, y - 1, x), _at(grid, y - 1, x + 1), edges)


# the contexts tried in order, most specific first (indices into _context's tuple)
_BACKOFF = ((0, 1, 2, 3, 4), (0, 2, 3, 4), (0, 2, 4), (0, 4), (0, 2), (2,), (0,), ())


class TileModel:
    """A back-off Markov chain over tiles in scanline order (see the module docstring)."""

    def __init__(self) -> None:
        self.tables: list[dict[tuple[str, ...], Counter[str]]] = [defaultdict(Counter) for _ in _BACKOFF]
        self.tiles: Counter[str] = Counter()

    def fit(self, grids: Sequence[Grid]) -> TileModel:
        for g in grids:
            w, h = len(g[0]), len(g)
            for y in range(h):
                for x in range(w):
                    tile = g[y][x]
                    ctx = _context(g, y, x, w, h)
                    for table, keep in zip(self.tables, _BACKOFF, strict=True):
                        table[tuple(ctx[i] for i in keep)][tile] += 1
                    if tile not in (EDGE, START, GOAL):
                        self.tiles[tile] += 1
        return self

    def _dist(self, ctx: tuple[str, ...], avoid: set[str]) -> Counter[str]:
        for table, keep in zip(self.tables, _BACKOFF, strict=True):
            c = table.get(tuple(ctx[i] for i in keep))
            if c:
                c = Counter({t: n for t, n in c.items() if t not in avoid})
                if c:
                    return c
        return Counter(self.tiles)

    def sample(self, width: int, height: int, rng: random.Random, border: str | None = None,
               watermark: Any = None) -> Grid:
        """A ``height`` x ``width`` grid, tile by tile (start/goal tiles are placed afterwards);
        ``border``: the tile of a closed outer ring (see :func:`closed_border`), kept as it is;
        ``watermark``: a :class:`~gencraft.guard.tournament.GridWatermark` that keys each draw."""
        if not self.tiles:
            raise DataError("the example maps hold no tiles besides S and G", param="examples")
        grid: Grid = [[""] * width for _ in range(height)]
        avoid = {EDGE, START, GOAL}
        for y in range(height):
            for x in range(width):
                if border is not None and _on_ring(y, x, width, height):
                    grid[y][x] = border
                    continue
                ctx = _context(grid, y, x, width, height)
                dist = self._dist(ctx, avoid)
                tiles, weights = zip(*sorted(dist.items()), strict=True)
                if watermark is None or len(tiles) == 1:
                    grid[y][x] = rng.choices(tiles, weights)[0]
                    continue
                p = np.asarray(weights, dtype=np.float64) / sum(weights)
                cdf = np.cumsum(watermark.reweight(p, tiles, grid_context(grid, y, x)))
                grid[y][x] = tiles[min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")),
                                       len(tiles) - 1)]
        return grid


def _on_ring(y: int, x: int, width: int, height: int) -> bool:
    return y in (0, height - 1) or x in (0, width - 1)


def closed_border(examples: Sequence[Grid], blocking: str = DEFAULT_BLOCKING) -> str | None:
    """The tile of the outer ring when every example closes its edge with blocking tiles (the most
    common of them, e.g. ``#``); ``None`` when some example's edge is open (a door, floor or
    water on the outer ring). Generated maps keep a closed border: it is never sampled open,
    carved or given the start or goal."""
    ring: Counter[str] = Counter()
    for g in examples:
        h, w = len(g), len(g[0])
        ring.update(g[y][x] for y in range(h) for x in range(w) if _on_ring(y, x, w, h))
    if not ring or any(t not in blocking for t in ring):
        return None
    return ring.most_common(1)[0][0]


def pattern_coverage(grid: Grid, examples: Sequence[Grid], k: int = 2) -> float:
    """Share of the grid's k x k windows (ignoring S/G) that also occur in the examples."""
    def windows(g: Grid) -> list[tuple[str, ...]]:
        clean = [["." if c in (START, GOAL) else c for c in row] for row in g]
        return [tuple(clean[y + dy][x + dx] for dy in range(k) for dx in range(k))
                for y in range(len(g) - k + 1) for x in range(len(g[0]) - k + 1)]

    seen = {w for e in examples for w in windows(e)}
    mine = windows(grid)
    return sum(w in seen for w in mine) / max(1, len(mine))


# ---------------------------------------------------------------- playability


@dataclass
class PlayReport:
    """Whether start and goal are connected, and how."""

    playable: bool
    reason: str = ""
    path_length: int | None = None
    start: tuple[int, int] | None = None
    goal: tuple[int, int] | None = None


def _find(grid: Grid, tile: str) -> list[tuple[int, int]]:
    return [(y, x) for y, row in enumerate(grid) for x, c in enumerate(row) if c == tile]


def _neighbours(grid: Grid, y: int, x: int) -> Iterable[tuple[int, int]]:
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ny, nx = y + dy, x + dx
        if 0 <= ny < len(grid) and 0 <= nx < len(grid[0]):
            yield ny, nx


def _bfs(grid: Grid, src: tuple[int, int], blocking: str) -> dict[tuple[int, int], int]:
    dist = {src: 0}
    todo = deque([src])
    while todo:
        y, x = todo.popleft()
        for ny, nx in _neighbours(grid, y, x):
            if (ny, nx) not in dist and grid[ny][nx] not in blocking:
                dist[(ny, nx)] = dist[(y, x)] + 1
                todo.append((ny, nx))
    return dist


def check_playable(grid: Grid, *, blocking: str = DEFAULT_BLOCKING) -> PlayReport:
    """Exactly one ``S`` and one ``G``, joined by a path over non-blocking tiles."""
    starts, goals = _find(grid, START), _find(grid, GOAL)
    if len(starts) != 1 or len(goals) != 1:
        return PlayReport(False, f"needs exactly one {START} and one {GOAL} (found {len(starts)} and {len(goals)})")
    s, g = starts[0], goals[0]
    dist = _bfs(grid, s, blocking)
    if g not in dist:
        return PlayReport(False, f"goal {g} cannot be reached from start {s}", start=s, goal=g)
    return PlayReport(True, "start and goal are connected", dist[g], s, g)


def place_start_goal(grid: Grid, *, blocking: str = DEFAULT_BLOCKING) -> bool:
    """Put ``S`` and ``G`` far apart in the biggest walkable region; False if it has < 2 tiles."""
    for y, row in enumerate(grid):
        for x, c in enumerate(row):
            if c in (START, GOAL):
                grid[y][x] = "."
    walk = [(y, x) for y, row in enumerate(grid) for x, c in enumerate(row) if c not in blocking]
    seen: set[tuple[int, int]] = set()
    best: list[tuple[int, int]] = []
    for cell in walk:
        if cell in seen:
            continue
        region = list(_bfs(grid, cell, blocking))
        seen.update(region)
        if len(region) > len(best):
            best = region
    if len(best) < 2:
        return False
    # two BFS sweeps find a pair of tiles (nearly) as far apart as the region allows
    a = max(_bfs(grid, min(best), blocking).items(), key=lambda kv: (kv[1], kv[0]))[0]
    b = max(_bfs(grid, a, blocking).items(), key=lambda kv: (kv[1], kv[0]))[0]
    grid[a[0]][a[1]], grid[b[0]][b[1]] = START, GOAL
    return True


def repair(grid: Grid, *, blocking: str = DEFAULT_BLOCKING, max_carve: int = 8, floor: str = ".",
           keep_border: bool = False) -> int | None:
    """Carve the corridor from S to G that turns the fewest blocking tiles into ``floor``
    (never through the outer ring with ``keep_border``).

    Returns the number of tiles carved, or None when it would take more than ``max_carve``
    (the grid is then left unchanged).
    """
    report = check_playable(grid, blocking=blocking)
    if report.playable:
        return 0
    if report.start is None or report.goal is None:
        return None
    s, g = report.start, report.goal
    cost = {s: 0}
    prev: dict[tuple[int, int], tuple[int, int]] = {}
    heap = [(0, s)]
    while heap:  # 0-1 shortest path: stepping onto a blocking tile costs one carve
        c, cell = heapq.heappop(heap)
        if cell == g:
            break
        if c > cost.get(cell, 1 << 30):
            continue
        for nb in _neighbours(grid, *cell):
            if keep_border and _on_ring(*nb, len(grid[0]), len(grid)) and grid[nb[0]][nb[1]] in blocking:
                continue
            nc = c + (grid[nb[0]][nb[1]] in blocking)
            if nc < cost.get(nb, 1 << 30):
                cost[nb], prev[nb] = nc, cell
                heapq.heappush(heap, (nc, nb))
    if cost.get(g, 1 << 30) > max_carve:
        return None
    cell, carved = g, 0
    while cell != s:
        if grid[cell[0]][cell[1]] in blocking:
            grid[cell[0]][cell[1]] = floor
            carved += 1
        cell = prev[cell]
    return carved


@dataclass
class MapResult:
    """A generated map and its checks. ``playable`` is False when nothing could make it so."""

    grid: Grid
    playable: bool
    report: str
    carved: int = 0
    path_length: int | None = None
    coverage: float = 0.0
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return render(self.grid)

    def to_dict(self) -> dict:
        return {"map": ["".join(r) for r in self.grid], "playable": self.playable, "report": self.report,
                "carved": self.carved, "path_length": self.path_length, "pattern_coverage": round(self.coverage, 4),
                "seed": self.seed}


def generate_map(examples: Sequence[Grid], *, width: int | None = None, height: int | None = None,
                 seed: int = 0, blocking: str = DEFAULT_BLOCKING, max_carve: int = 8,
                 tries: int = 4, watermark: Any = None) -> MapResult:
    """A new map in the examples' style, made playable if possible (see the module docstring).

    Up to ``tries`` samples (seeds ``seed``, ``seed+1``...) are drawn until one is playable
    (directly or after carving at most ``max_carve`` tiles); the last one is reported otherwise.
    ``watermark``: the keyed draw to sample tiles with
    (:meth:`gencraft.guard.ReleasePolicy.grid_watermark`; None: unmarked).
    """
    if not examples:
        raise DataError("no example maps given", param="examples")
    width = width or len(examples[0][0])
    height = height or len(examples[0])
    if not (2 <= width <= 512 and 2 <= height <= 512):
        raise UsageError(f"map size {width}x{height}: width and height must be 2..512", param="width")
    model = TileModel().fit(examples)
    border = closed_border(examples, blocking)
    result = None
    for t in range(max(1, tries)):
        rng = random.Random(seed + t)
        grid = model.sample(width, height, rng, border, watermark)
        if not place_start_goal(grid, blocking=blocking):
            result = MapResult(grid, False, "no two connected walkable tiles to hold start and goal",
                               seed=seed + t)
            continue
        report = check_playable(grid, blocking=blocking)
        carved = 0
        if not report.playable:
            carved_or_none = repair(grid, blocking=blocking, max_carve=max_carve, keep_border=border is not None)
            if carved_or_none is None:
                result = MapResult(grid, False, f"{report.reason}; repair needs more than {max_carve} carved tiles",
                                   seed=seed + t)
                continue
            carved = carved_or_none
            report = check_playable(grid, blocking=blocking)
        cov = pattern_coverage(grid, examples)
        return MapResult(grid, report.playable, report.reason, carved, report.path_length, cov, seed + t)
    assert result is not None
    result.coverage = pattern_coverage(result.grid, examples)
    return result

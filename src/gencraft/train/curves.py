"""Runs as pictures and figures: read a run's metrics, draw its curves, compare runs.

- :func:`read_metrics` -> the run's ``metrics.jsonl`` as it should be read after resumes (records
  an interrupted session logged past the step its successor resumed from are dropped);
- :func:`write_curves` -> ``RUN/curves.png`` (losses, and the FID-proxy of image runs), drawn when
  a run ends; :func:`pictures_markdown` -> the model card's section that embeds it (and the last
  sample grid of image runs);
- :func:`summarize` -> one run's figures (kind, steps, best loss or FID-proxy, size...) for
  ``gencraft runs list``, the studio's Runs tab and :func:`write_comparison` (``gencraft runs
  compare``: curves of several runs overlaid, their figures in a table).

Drawn with matplotlib's Agg canvas (no display, no pyplot state shared between threads).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gencraft.errors import UsageError
from gencraft.io import atomic_path, read_jsonl
from gencraft.paths import existing_run
from gencraft.paths import home as default_home
from gencraft.runs import MARK, run_status

CURVES = "curves.png"
# the train-split fields drawn as losses (GANs log their two players' losses)
LOSS_FIELDS = ("loss", "loss_d", "loss_g")
IMAGE_KINDS = ("vae", "dcgan", "stylegan")


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The run's metrics records in order, per split keeping only what the last session logged.

    A resumed run appends from its checkpoint's step: where a split's step goes back, the records
    at or past that step from the earlier session are dropped (what TensorBoard's purge does).
    """
    kept: dict[str, list[dict[str, Any]]] = {}
    order: list[tuple[str, dict[str, Any]]] = []
    for r in read_jsonl(Path(run_dir) / "metrics.jsonl"):
        if not isinstance(r, dict) or not isinstance(r.get("step"), int | float):
            continue
        split = str(r.get("split", "train"))
        rows = kept.setdefault(split, [])
        while rows and rows[-1]["step"] >= r["step"]:
            rows.pop()
        rows.append(r)
        order.append((split, r))
    alive = {id(r) for rows in kept.values() for r in rows}
    return [r for _, r in order if id(r) in alive]


def series(records: list[dict[str, Any]], split: str, field: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of one field of one split (finite numbers only)."""
    xs, ys = [], []
    for r in records:
        v = r.get(field)
        if r.get("split", "train") == split and isinstance(v, int | float) and v == v and abs(v) != float("inf"):
            xs.append(float(r["step"]))
            ys.append(float(v))
    return xs, ys


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, out: str | os.PathLike[str]) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def _has_fid(records: list[dict[str, Any]]) -> bool:
    return bool(series(records, "heldout", "fid")[0])


def write_curves(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path | None:
    """Draw the run's loss curves (and FID-proxy) into ``RUN/curves.png``; None when nothing was logged."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    if not records:
        return None
    panels = 2 if _has_fid(records) else 1
    fig = _figure(6.4 * panels, 3.6)
    ax = fig.add_subplot(1, panels, 1)
    for field in LOSS_FIELDS:
        xs, ys = series(records, "train", field)
        if xs:
            ax.plot(xs, ys, lw=1.2, alpha=0.8, label=f"train {field}")
    for split in ("val", "heldout"):
        xs, ys = series(records, split, "loss")
        if xs:
            ax.plot(xs, ys, "o-", lw=1.8, ms=3, label=f"{split} loss")
    ax.set(title=f"{run_dir.name}: loss", xlabel="step", ylabel="loss")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    if panels == 2:
        ax2 = fig.add_subplot(1, 2, 2)
        xs, ys = series(records, "heldout", "fid")
        ax2.plot(xs, ys, "o-", color="tab:red", lw=1.8, ms=3, label="FID-proxy (held-out)")
        ax2.set(title="FID-proxy (lower is better)", xlabel="step")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    return _save(fig, out or run_dir / CURVES)


def last_sample_grid(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest ``samples/step_N.png`` of an image run."""
    grids = sorted(Path(run_dir).glob("samples/step_*.png"))
    return grids[-1] if grids else None


def pictures_markdown(run_dir: str | os.PathLike[str]) -> str:
    """The model card's pictures: the loss curves and, for image runs, the last sample grid
    (relative links, so the card shows them wherever the run folder goes)."""
    run_dir = Path(run_dir)
    parts = [""]
    if (run_dir / CURVES).is_file():
        parts += ["## Training curves", "", f"![Loss curves of {run_dir.name}]({CURVES})", ""]
    grid = last_sample_grid(run_dir)
    if grid is not None:
        rel = grid.relative_to(run_dir).as_posix()
        parts += ["## Last sample grid", "", f"![Samples at {grid.stem.replace('_', ' ')}]({rel})", ""]
    return "\n".join(parts) if len(parts) > 1 else ""


# ---- figures of runs


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _params(weights: Path) -> int | None:
    if not weights.is_file():
        return None
    try:
        from safetensors import safe_open

        n = 0
        with safe_open(str(weights), framework="numpy") as f:
            for k in f.keys():
                shape = f.get_slice(k).get_shape()
                c = 1
                for d in shape:
                    c *= d
                n += c
        return n
    except Exception:  # a damaged file: the listing still shows the run
        return None


def summarize(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """One run's figures: kind, dataset, steps, best validation loss (text) or FID-proxy (images),
    training time, size of its weights, parameters, and what pictures it has."""
    run_dir = Path(run_dir)
    try:
        info = json.loads((run_dir / "gencraft.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        info = {}
    m = info.get("metrics", {}) if isinstance(info.get("metrics"), dict) else {}
    kind = str(info.get("kind", "?"))
    best_name, best = ("fid", m.get("best_fid", m.get("fid"))) if kind in IMAGE_KINDS else ("val_loss", m.get("best_val_loss"))
    data = info.get("data", {}) if isinstance(info.get("data"), dict) else {}
    dataset = data.get("dataset") or ""
    has_ckpt = (run_dir / "checkpoints" / "last" / "state.json").is_file()
    return {
        "name": run_dir.name, "path": str(run_dir), "kind": kind, "run_id": info.get("run_id"),
        "created": info.get("created"), "preset": info.get("preset"),
        "dataset": Path(dataset).name if dataset else None,
        "step": m.get("step"), "best_metric": best_name, "best": best,
        "val_bpc": m.get("val_bpc"), "train_time_s": m.get("train_time_s"),
        "stopped": m.get("stopped"), "size_bytes": _size(run_dir / "model.safetensors"),
        "params": _params(run_dir / "model.safetensors"), "complete": bool(info) and (run_dir / "model.safetensors").is_file(),
        "resumable": has_ckpt, "curves": (run_dir / CURVES).is_file(),
        "status": run_status(run_dir),  # finished | training | stopped | interrupted | failed (train.autosave)
        "sample_grid": (g.relative_to(run_dir).as_posix() if (g := last_sample_grid(run_dir)) else None),
    }


def list_runs(home: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Summaries of every run under ``HOME/runs`` (finished or with a checkpoint), newest first."""
    runs = Path(home or default_home()) / "runs"
    out = []
    for d in runs.iterdir() if runs.is_dir() else []:
        if d.name.startswith(".") or not d.is_dir():
            continue
        if any((d / f).is_file() for f in ("gencraft.json", "checkpoints/last/state.json", MARK)):
            out.append(summarize(d))
    return sorted(out, key=lambda s: (s.get("created") or "", s["name"]), reverse=True)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def comparison_rows(summaries: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The figures table of ``runs compare`` (header, rows), shared by the terminal and the PNG."""
    header = ["run", "kind", "steps", "best", "of", "bpc", "train s", "params", "MB"]
    rows = []
    for s in summaries:
        what = {"fid": "FID-proxy", "val_loss": "val loss"}.get(s["best_metric"], s["best_metric"])
        rows.append([s["name"], s["kind"], _fmt(s["step"]), _fmt(s["best"]), what if s.get("best") is not None else "-",
                     _fmt(s["val_bpc"]), _fmt(s["train_time_s"], 3),
                     f"{s['params']:,}" if s.get("params") else "-", f"{s['size_bytes'] / 1e6:.2f}"])
    return header, rows


def write_comparison(runs: list[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Overlay the curves of ``runs`` (names or paths) in one PNG, their figures in a table under them."""
    if len(runs) < 2:
        raise UsageError("runs compare: give two or more runs", param="runs")
    dirs = [existing_run(r) for r in runs]
    recs = [read_metrics(d) for d in dirs]
    sums = [summarize(d) for d in dirs]
    fid = any(_has_fid(r) for r in recs)
    panels = 2 if fid else 1
    fig = _figure(6.4 * panels, 3.8 + 0.28 * (len(dirs) + 1))
    grid = fig.add_gridspec(2, panels, height_ratios=[3.6, 0.28 * (len(dirs) + 1)])
    ax = fig.add_subplot(grid[0, 0])
    colors = [f"C{i % 10}" for i in range(len(dirs))]
    for d, r, c in zip(dirs, recs, colors, strict=True):
        xs, ys = series(r, "train", "loss")
        if xs:
            ax.plot(xs, ys, color=c, lw=1, alpha=0.45)
        for split in ("val", "heldout"):
            vx, vy = series(r, split, "loss")
            if vx:
                ax.plot(vx, vy, "o-", color=c, lw=1.8, ms=3, label=f"{d.name} ({split})")
        if xs and not any(series(r, s, "loss")[0] for s in ("val", "heldout")):
            ax.lines[-1].set_label(f"{d.name} (train)")
    ax.set(title="loss (thin: train, dots: validation)", xlabel="step", ylabel="loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if fid:
        ax2 = fig.add_subplot(grid[0, 1])
        for d, r, c in zip(dirs, recs, colors, strict=True):
            xs, ys = series(r, "heldout", "fid")
            if xs:
                ax2.plot(xs, ys, "o-", color=c, lw=1.8, ms=3, label=d.name)
        ax2.set(title="FID-proxy (held-out; lower is better)", xlabel="step")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    tab = fig.add_subplot(grid[1, :])
    tab.axis("off")
    header, rows = comparison_rows(sums)
    table = tab.table(cellText=rows, colLabels=header, loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(header))))
    for i, c in enumerate(colors):
        table[(i + 1, 0)].get_text().set_color(c)
    return _save(fig, out)


__all__ = ["comparison_rows", "list_runs", "pictures_markdown", "read_metrics", "series", "summarize",
           "write_comparison", "write_curves"]

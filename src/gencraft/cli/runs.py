"""`gencraft runs list` and `gencraft runs compare RUN RUN... --out compare.png`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gencraft.paths import existing_run

runs_app = typer.Typer(help="See and compare training runs.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)


def _table(header: list[str], rows: list[list[str]], title: str | None = None) -> Table:
    t = Table(title=title, title_justify="left", show_edge=False)
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i < 2 else "right")
    for r in rows:
        t.add_row(*(escape(c) for c in r))
    return t


@runs_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON.")) -> None:
    """Every run under GENCRAFT_HOME/runs with its figures (newest first)."""
    from gencraft.train.curves import comparison_rows, list_runs

    runs = list_runs()
    if as_json:
        print(json.dumps(runs, indent=2))
        return
    if not runs:
        console.print("no runs yet: gencraft train DATASET --out NAME")
        return
    header, rows = comparison_rows(runs)
    for r, s in zip(rows, runs, strict=True):
        r.append(run_note(s))
    console.print(_table(header + ["note"], rows))


def run_note(s: dict) -> str:
    """What the listing says of a run that is not simply finished (train.autosave.run_status)."""
    st = s.get("status") or {"state": "finished"}
    at = f" at step {st['checkpoint_step']}" if st.get("checkpoint_step") is not None else ", no checkpoint yet"
    if st["state"] == "training":
        return f"training (pid {st.get('pid')}){at}"
    if st["state"] in ("stopped", "interrupted", "failed"):
        return f"{st['state']}{at}" + (": resume with --resume" if st.get("checkpoint_step") is not None else "")
    if s["resumable"] and not s["complete"]:
        return "resumable"
    return "stopped: " + s["stopped"] if s.get("stopped") else ""


@runs_app.command("compare")
def compare_cmd(
    runs: list[str] = typer.Argument(..., help="Two or more run names (under GENCRAFT_HOME) or paths."),
    out: Path = typer.Option(Path("compare.png"), "--out", "-o", help="PNG to write: the curves overlaid, "
                                                                     "the figures in a table."),
) -> None:
    """Overlay the loss curves (and FID-proxy) of several runs in one PNG, figures side by side."""
    from gencraft.train.curves import comparison_rows, summarize, write_comparison

    path = write_comparison(runs, out)
    header, rows = comparison_rows([summarize(existing_run(r)) for r in runs])
    console.print(_table(header, rows))
    console.print(f"curves written to [cyan]{escape(str(path))}[/]")


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")

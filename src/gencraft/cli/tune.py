"""`gencraft tune RUN --from-ratings`: learn from the library's thumbs up and down (DPO adapter)."""

from __future__ import annotations

import json
import os

import typer
from rich.console import Console

from gencraft.errors import UsageError

console = Console(highlight=False)


def tune_cmd(
    run: str = typer.Argument(..., help="The run (or hf:PATH) to tune: the reference model."),
    from_ratings: bool = typer.Option(False, "--from-ratings", help="Preference pairs from the content library's "
                                      "ratings (outputs of the same prompt rated up vs down)."),
    kind: str = typer.Option(None, "--kind", help="Only ratings of this kind of output (ads, write, game, "
                             "completion, chat...)."),
    since: str = typer.Option(None, "--since", help="Only ratings of outputs made since this date (2026-05-01)."),
    out: str = typer.Option(None, "--out", "-o", help="Adapter run to write (default RUN+prefs, replaced on "
                            "each tune once the new one has trained)."),
    sets: list[str] = typer.Option(None, "--set", help="dpo.beta=0.5 (anchor to RUN), lora.r=8, learning_rate=... "
                                   "(repeatable)."),
    min_pairs: int = typer.Option(32, "--min-pairs", help="Below this many rated pairs, rated outputs are also "
                                  "paired with fresh samples of RUN."),
    max_time: float = typer.Option(None, "--max-time", help="Wall-clock budget in seconds."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pairing, the fresh samples and training."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a preference adapter (DPO) on RUN from the outputs you rated; use it as --model RUN+prefs."""
    if not from_ratings:
        raise UsageError("tune: say where the preferences come from: --from-ratings", param="from_ratings")
    if min_pairs < 0:
        raise UsageError(f"--min-pairs {min_pairs}: must not be negative", param="min_pairs")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # a training process on a shared CPU
    from gencraft.apps.prefs import tune

    path = tune(run, kind=kind, since=since, out=out, overrides=sets or [], min_pairs=min_pairs,
                max_time=max_time, seed=seed, progress=not quiet)
    info = json.loads((path / "gencraft.json").read_text(encoding="utf-8"))
    m = info.get("metrics", {})
    console.print(f"preference adapter written to [cyan]{path}[/] (step {m.get('step')}, best pair loss "
                  f"{m.get('best_val_loss') or float('nan'):.4f}; DPO starts at 0.6931)")
    console.print(f"next: gencraft generate {path.name if path.parent.name == 'runs' else path} --prompt '...'")


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_cmd)

"""`gencraft train` and `gencraft evaluate`."""

from __future__ import annotations

import json
import os

import typer
from rich.console import Console
from rich.markup import escape

import gencraft

console = Console(highlight=False)


def train_cmd(
    dataset: str = typer.Argument(..., help="Dataset name (under GENCRAFT_HOME) or path, from `gencraft data prepare`."),
    model: str = typer.Option(None, "--model", "-m", help="Model family: gpt (default), lstm, text_vae or tts (a voice)."),
    preset: str = typer.Option("tiny", "--preset", "-p", help="Size preset: tiny, small or base."),
    out: str = typer.Option(None, "--out", "-o", help="Run name or path (default: DATASET-MODEL)."),
    sets: list[str] = typer.Option(None, "--set", help="Override a model or training field: key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    max_time: float = typer.Option(None, "--max-time", help="Wall-clock budget in seconds (stops cleanly)."),
    seed: int = typer.Option(None, "--seed", help="Seed for initialization, data order and dropout."),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    part: str = typer.Option(None, "--part", help="--model tts: acoustic, vocoder or both (default)."),
    base: str = typer.Option(None, "--from", help="Fine-tune from this base: a gpt/lstm run, or hf:PATH (a local "
                             "Hugging Face causal LM). The dataset must use its tokenizer (data prepare --tokenizer-from)."),
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters on the --from base instead of every weight "
                              "(--set lora.r=8, lora.alpha=16, lora.dropout=0, lora.targets=attn,mlp)."),
    checkpoint_every: str = typer.Option(None, "--checkpoint-every", help="Also save the resumable checkpoint "
                                         "every this much wall time: 300, 90s, 5m, 1h; 0 = only by steps (default 5m)."),
) -> None:
    """Train a language model (GPT, LSTM, text VAE) or a voice (tts) on a prepared dataset."""
    gencraft.use_thread_policy("train")  # before torch loads (the CLI imports it lazily)
    from gencraft.guard.copies import index_run
    from gencraft.train.autosave import parse_every
    from gencraft.train.loop import train

    if checkpoint_every is not None:
        sets = [*(sets or []), f"checkpoint_every={parse_every(checkpoint_every)}"]
    run = train(dataset, model=model, preset=preset, out=out, overrides=sets or [], resume=resume,
                max_time=max_time, seed=seed, device=device, progress=not quiet, part=part, base=base, lora=lora)
    if os.environ.get("RANK", "0") != "0" or not (run / "gencraft.json").is_file():  # rank 0 reports
        return
    info = json.loads((run / "gencraft.json").read_text(encoding="utf-8"))
    if info.get("kind") != "tts":  # a voice's corpus is recordings: the copy check reads text
        index_run(run, console.print)  # so every generation can be checked for copies of the corpus
    m = info.get("metrics", {})
    if info.get("kind") == "tts":
        for name, pm in m.items():
            console.print(f"{name}: step {pm.get('step')}, " + ", ".join(
                f"{k} {v:.4f}" for k, v in pm.items() if k.startswith("best")))
        console.print(f"voice written to [cyan]{escape(str(run))}[/] (speaker {info.get('speaker')}, license {info.get('license')})")
        console.print(f"next: gencraft speak {run} 'Hello there.' --out hello.wav", markup=False)
        return
    console.print(f"run written to [cyan]{escape(str(run))}[/] (step {m.get('step')}, best val loss "
                  f"{m.get('best_val_loss', float('nan')):.4f}, bpc {m.get('val_bpc', float('nan')):.3f})")
    console.print(f"next: gencraft generate {run} --prompt 'Once upon a time'", markup=False)
    console.print(f"      gencraft evaluate {run}", markup=False)


def evaluate_cmd(
    run: str = typer.Argument(..., help="Run name (under GENCRAFT_HOME) or path."),
    data: str = typer.Option(None, "--data", help="Evaluate on this dataset's validation split instead."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Loss, perplexity and bits per character of a run on a whole validation split."""
    from gencraft.train.evaluate import evaluate

    r = evaluate(run, data, device=device)
    if as_json:
        console.print_json(json.dumps(r))
        return
    console.print(f"{r['run']} on {r['dataset']} (val, {r['tokens']:,} tokens)")
    console.print(f"loss {r['loss']:.4f}  perplexity {r['ppl']:.3f}  bits per character {r['bpc']:.4f}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)

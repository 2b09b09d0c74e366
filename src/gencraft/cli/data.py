"""`gencraft data ...`: turning sources into datasets. Other modules add sub-commands to ``data_app``."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gencraft.data.prepare import combine, parse_licenses, prepare
from gencraft.errors import UsageError
from gencraft.paths import dataset_path, run_path

data_app = typer.Typer(help="Prepare datasets from your own files.", no_args_is_help=True)

console = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@data_app.command("prepare")
def prepare_cmd(
    sources: list[str] = typer.Argument(..., help="Files or folders: .txt .md .html .json .jsonl .csv."),
    out: str = typer.Option(..., "--out", "-o", help="Dataset name (under GENCRAFT_HOME/datasets) or path."),
    tokenizer: str = typer.Option(None, "--tokenizer", "-t", help="char (default) or bpe (byte-level BPE)."),
    vocab_size: int = typer.Option(None, "--vocab-size", help="BPE vocabulary size (default 8000)."),
    field: str = typer.Option(None, "--field", help="JSON/JSONL key or dotted path holding the text."),
    column: str = typer.Option(None, "--column", help="CSV column holding the text."),
    license: list[str] = typer.Option(None, "--license", help="License of the sources, e.g. CC-BY-4.0; "
                                      "or PATH=LICENSE per file/folder (repeatable)."),
    normalize: str = typer.Option("nfc", "--normalize", help="Unicode normalization: nfc or nfkc."),
    near_dup_threshold: float = typer.Option(0.8, "--near-dup-threshold",
                                             help="Jaccard similarity above which near duplicates are dropped."),
    no_dedupe: bool = typer.Option(False, "--no-dedupe", help="Keep exact and near duplicates."),
    min_chars: int = typer.Option(1, "--min-chars", help="Drop documents shorter than this."),
    max_chars: int = typer.Option(None, "--max-chars", help="Drop documents longer than this."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of documents for validation."),
    split: str = typer.Option("hash", "--split", help="hash (stable per document) or tail (the last ones)."),
    unit: str = typer.Option("auto", "--unit", help="Document unit: auto, file, paragraph or line."),
    seed: int = typer.Option(0, "--seed", help="Seed of the hash split."),
    workers: int = typer.Option(None, "--workers", "-w", help="Read, clean and tokenize in N processes "
                                "(streaming: memory stays bounded whatever the corpus size)."),
    stream: bool = typer.Option(None, "--stream/--no-stream", help="Force the streaming path on or off "
                                "(default: on with --workers or for sources over 256 MB)."),
    dedupe_memory: int = typer.Option(None, "--dedupe-memory", help="MiB for the streaming path's duplicate "
                                      "tables (default 256; more finds duplicates further apart)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the summary."),
    tokenizer_from: str = typer.Option(None, "--tokenizer-from", help="Use the tokenizer of this model (a run, "
                                       "or hf:PATH) instead of training one: a dataset to fine-tune it on; or of "
                                       "a dataset: to `gencraft data combine` the two (add data, prepare only the new)."),
) -> None:
    """Read, clean, deduplicate and split SOURCES, train a tokenizer, write a dataset."""
    progress = None if quiet else (lambda msg: console.print(msg, style="dim", markup=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if tokenizer is not None and tokenizer_from is not None:
            raise UsageError("--tokenizer-from takes the base model's tokenizer: drop --tokenizer",
                             param="tokenizer_from")
        base_tok = None
        from_dataset = tokenizer_from is not None and _dataset_not_model(tokenizer_from)
        if tokenizer_from is not None and not from_dataset:
            from gencraft.train.finetune import base_tokenizer

            base_tok = base_tokenizer(tokenizer_from)  # checked before any file is read
        path = prepare(sources, out, tokenizer=tokenizer or "char", vocab_size=vocab_size, field=field, column=column,
                       license=parse_licenses(license), normalization=normalize, dedupe=not no_dedupe,
                       near_dup_threshold=near_dup_threshold, min_chars=min_chars, max_chars=max_chars,
                       val_fraction=val_fraction, split=split, unit=unit, seed=seed, progress=progress,
                       workers=workers, stream=stream,
                       dedupe_memory=None if dedupe_memory is None else dedupe_memory << 20,
                       tokenizer_from=tokenizer_from, base_tokenizer=base_tok)
    for w in caught:
        err.print(f"[yellow]warning:[/] {escape(str(w.message))}")
    _summary(path, f"gencraft data combine {tokenizer_from} {out} --out NAME" if from_dataset else
             f"gencraft train {out} --from {tokenizer_from}" if tokenizer_from else
             f"gencraft train {out} --model gpt --preset tiny")


def _dataset_not_model(spec: str) -> bool:
    """``--tokenizer-from SPEC`` names a dataset (not a run or ``hf:PATH``)."""
    return (not spec.startswith("hf:") and not (run_path(spec) / "gencraft.json").is_file()
            and (dataset_path(spec) / "manifest.json").is_file())


@data_app.command("combine")
def combine_cmd(
    parts: list[str] = typer.Argument(..., help="Prepared datasets (names or paths) sharing one tokenizer: "
                                      "the first's (prepare the others with --tokenizer-from FIRST)."),
    out: str = typer.Option(..., "--out", "-o", help="Dataset name (under GENCRAFT_HOME/datasets) or path."),
) -> None:
    """Read several prepared datasets as one (nothing copied): add data without preparing it all again."""
    path = combine(parts, out)
    _summary(path, f"gencraft train {out} --model gpt --preset tiny")


def _summary(path: Path, next_step: str) -> None:
    """What a written dataset holds: the cleaning steps, the splits, the tokenizer, what to do next."""
    import json

    m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    steps = Table(title="cleaning", title_justify="left", show_edge=False)
    steps.add_column("step")
    steps.add_column("documents", justify="right")
    steps.add_column("chars", justify="right")
    for s in m["steps"]:
        removed = f" (-{s['removed']})" if s.get("removed") else ""
        steps.add_row(s["step"], f"{s['documents']:,}{removed}", f"{s['chars']:,}")
    console.print(steps)
    tok = m["tokenizer"]
    for name in ("train", "val"):
        s = m["splits"][name]
        shards = len(m["shards"][name]) if m.get("shards") else 0
        console.print(f"{name:>5}: {s['documents']:,} documents, {s['tokens']:,} tokens, {s['chars']:,} chars"
                      + (f" in {shards} shards" if shards else ""))
    console.print(f"tokenizer {tok['kind']}, vocab {tok['vocab_size']:,} ({m['dtype']}); "
                  f"{len(m['sources'])} source file(s)"
                  + (f" in {len(m['parts'])} datasets: {', '.join(p['name'] for p in m['parts'])}"
                     if m.get("parts") else ""), markup=False)
    console.print(f"dataset written to [cyan]{escape(str(path))}[/]")
    console.print(f"next: {next_step}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")

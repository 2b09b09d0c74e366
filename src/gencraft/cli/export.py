"""`gencraft export RUN --format hf --out DIR`: a run in another ecosystem's format."""

from __future__ import annotations

import typer
from rich.console import Console

from gencraft.errors import UsageError

console = Console(highlight=False, markup=False)  # paths and names print as given


def export_cmd(
    run: str = typer.Argument(..., help="Run name or path (a gpt run)."),
    fmt: str = typer.Option("hf", "--format", "-f", help="hf: a Hugging Face GPT-2 folder (transformers, vLLM, TGI)."),
    out: str = typer.Option(..., "--out", "-o", help="Folder to write."),
    merge: bool = typer.Option(False, "--merge", help="For an adapter run: write base + adapter merged into one model."),
) -> None:
    """Export a trained GPT run (or a fine-tuned/adapted model, --merge) as a Hugging Face model folder."""
    if fmt != "hf":
        raise UsageError(f"--format {fmt!r}: only 'hf' is supported", param="format")
    from gencraft.export import export_hf

    path = export_hf(run, out, merge=merge)
    console.print(f"wrote {path} (load with transformers' from_pretrained, or `gencraft generate hf:{path}`)",
                  markup=False)


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)

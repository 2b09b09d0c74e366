"""`gencraft data music SOURCES --out NAME` and `gencraft compose RUN --out tune.mid [--wav]`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from gencraft.apps._common import release_policy
from gencraft.cli.data import data_app
from gencraft.cli.library import NO_STORE_HELP
from gencraft.data.music import prepare_music

console = Console(highlight=False, markup=False)  # paths and names print as given


def data_music(
    sources: list[str] = typer.Argument(..., help="Folders or files (MIDI, MusicXML, ABC, kern), or music21:bach."),
    out: str = typer.Option(..., "--out", help="Dataset name (under GENCRAFT_HOME) or path."),
    transpose: int = typer.Option(5, "--transpose", help="Add training pieces transposed by ±1..±N semitones."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of pieces held out for validation."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/validation split."),
    license: str | None = typer.Option(None, "--license", help="License of your files (recorded in the manifest)."),
    limit: int | None = typer.Option(None, "--limit", help="Read only the first N files."),
) -> None:
    """Turn scores or MIDI files into a dataset of REMI event tokens (trains with --model gpt|lstm)."""
    path = prepare_music(sources, out=out, transpose_range=transpose, val_fraction=val_fraction, seed=seed,
                         license=license, limit=limit)
    import json

    m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    s = m["splits"]
    console.print(f"dataset {path}: {s['train']['documents']} train pieces ({s['train']['tokens']} tokens), "
                  f"{s['val']['documents']} val pieces ({s['val']['tokens']} tokens), "
                  f"vocabulary {m['tokenizer']['vocab_size']} events")


def compose_cmd(
    run: str = typer.Argument(..., help="A gpt/lstm run trained on a music dataset."),
    out: Path = typer.Option(Path("tune.mid"), "--out", help="MIDI file to write."),
    bars: int = typer.Option(16, "--bars", help="Length in bars."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (same seed, same tune)."),
    wav: bool = typer.Option(False, "--wav", help="Also render OUT.wav with the built-in synthesizer."),
    tempo: float = typer.Option(90.0, "--tempo", help="Quarter notes a minute."),
    temperature: float = typer.Option(1.0, "--temperature"),
    top_k: int = typer.Option(0, "--top-k"),
    top_p: float = typer.Option(1.0, "--top-p"),
    time_signature: str = typer.Option("4/4", "--time-signature"),
    no_watermark: bool = typer.Option(False, "--no-watermark", help="Do not watermark (the manifest says so)."),
    no_store: bool = typer.Option(False, "--no-store", help=NO_STORE_HELP),
) -> None:
    """Compose a tune: well-formed bars through the decoding engine, written as MIDI (and WAV)."""
    from gencraft.apps.music import compose

    with release_policy(watermark=not no_watermark, store=not no_store) as policy:
        c = compose(run, out, bars=bars, seed=seed, wav=wav, tempo=tempo, temperature=temperature, top_k=top_k,
                    top_p=top_p, time_signature=time_signature, policy=policy)
    console.print(f"wrote {c.midi} ({c.piece.bars} bars, {len(c.piece.notes)} notes)"
                  + (f" and {c.wav}" if c.wav else "") + f"; provenance in {c.manifest}")


def register(app: typer.Typer) -> None:
    data_app.command("music")(data_music)
    app.command("compose")(compose_cmd)

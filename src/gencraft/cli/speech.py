"""`gencraft data speech FOLDER --out NAME --license L --speaker NAME` and `gencraft data speech-sample`."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape

from gencraft.cli.data import data_app

console = Console(highlight=False)


def data_speech(
    folder: str = typer.Argument(..., help="LJSpeech folder (metadata.csv + wavs/) or a folder of x.wav + x.txt pairs."),
    out: str = typer.Option(..., "--out", "-o", help="Dataset name (under GENCRAFT_HOME/datasets) or path."),
    license: str = typer.Option(..., "--license", help="License of the recordings (required for a person's voice)."),
    speaker: str = typer.Option(..., "--speaker", help="Whose voice this is (recorded in the manifest and model card)."),
    language: str = typer.Option("auto", "--language", help="auto, en or zh (auto: per sentence)."),
    min_seconds: float = typer.Option(0.5, "--min-seconds", help="Drop recordings shorter than this."),
    max_seconds: float = typer.Option(20.0, "--max-seconds", help="Drop recordings longer than this."),
    min_sample_rate: int = typer.Option(16000, "--min-sample-rate", help="Drop recordings sampled below this."),
    val_fraction: float = typer.Option(0.05, "--val-fraction", help="Share of recordings held out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the summary."),
) -> None:
    """Prepare a voice dataset: mono 22,050 Hz, trimmed, loudness-normalized, phonemized; drops counted by reason."""
    from gencraft.data.speech import prepare_speech

    say = None if quiet else (lambda msg: console.print(msg, style="dim", markup=False))
    path = prepare_speech(folder, out=out, license=license, speaker=speaker, language=language,
                          min_seconds=min_seconds, max_seconds=max_seconds, min_sample_rate=min_sample_rate,
                          val_fraction=val_fraction, progress=say)
    m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    c = m["counts"]
    console.print(f"kept {c['kept']} of {c['found']} recordings"
                  + (f"; dropped {', '.join(f'{n} {r}' for r, n in c['dropped'].items())}" if c["dropped"] else ""))
    for name in ("train", "val"):
        s = m["splits"][name]
        console.print(f"{name:>5}: {s['utterances']} utterances, {s['seconds'] / 60:.1f} min")
    console.print(f"{m['tokenizer']['vocab_size']} phoneme symbols ({', '.join(m['tokenizer']['languages'])}); "
                  f"speaker {escape(m['speaker'])}, license {escape(m['license'])}")
    console.print(f"dataset written to [cyan]{escape(str(path))}[/]")
    console.print(f"next: gencraft train {escape(out)} --model tts --preset small")


def data_speech_sample(
    out: str = typer.Argument(..., help="Folder to write (LJSpeech layout)."),
    voice: str = typer.Option("A", "--voice", help="A (low male), B (high female) or an espeak-ng voice name."),
    n: int = typer.Option(600, "--n", help="Number of sentences."),
    offset: int = typer.Option(0, "--offset", help="First sentence of the sample corpus to read."),
) -> None:
    """Write an LJSpeech folder of espeak-ng reading the bundled sample corpus (to try voice training)."""
    from gencraft.data.speech import make_espeak_corpus
    from gencraft.errors import UsageError

    if not 1 <= n <= 1143:
        raise UsageError(f"--n {n}: the sample corpus has 1143 sentences; choose 1..1143", param="n")
    path = make_espeak_corpus(out, voice, n, offset)
    console.print(f"wrote {n} recordings to [cyan]{escape(str(path))}[/]")


def register(app: typer.Typer) -> None:
    data_app.command("speech")(data_speech)
    data_app.command("speech-sample")(data_speech_sample)

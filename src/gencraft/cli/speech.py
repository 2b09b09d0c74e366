"""`gencraft data speech FOLDER --out NAME --license L --speaker NAME` and `gencraft data speech-sample`."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape

import gencraft
from gencraft.apps._common import release_policy
from gencraft.cli.data import data_app
from gencraft.errors import NotFoundError, UsageError

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
    from gencraft.generate.espeak import make_espeak_corpus

    if not 1 <= n <= 1143:
        raise UsageError(f"--n {n}: the sample corpus has 1143 sentences; choose 1..1143", param="n")
    path = make_espeak_corpus(out, voice, n, offset)
    console.print(f"wrote {n} recordings to [cyan]{escape(str(path))}[/]")


def speak_cmd(
    voice: str = typer.Argument(..., help="A voice: a tts run (name or path), or espeak / espeak:NAME (no training)."),
    text: str = typer.Argument(None, help="What to say (or --file)."),
    out: str = typer.Option("speech.wav", "--out", "-o", help="WAV file to write ('-': raw 16-bit PCM to stdout)."),
    file: str = typer.Option(None, "--file", "-f", help="Read the text from this UTF-8 file."),
    speed: float = typer.Option(1.0, "--speed", help="Faster (>1) or slower (<1), 0.25-4."),
    seed: int = typer.Option(0, "--seed", help="Seed (recorded; synthesis is deterministic)."),
    engine: str = typer.Option(None, "--engine", help="espeak: speak with espeak-ng instead of VOICE's model."),
    stream: bool = typer.Option(False, "--stream", help="Write sentence by sentence as they are made (any length)."),
    no_watermark: bool = typer.Option(False, "--no-watermark", help="Do not watermark the audio."),
    no_store: bool = typer.Option(False, "--no-store", help="Do not keep the audio in the content library."),
) -> None:
    """Say TEXT in a trained voice or with espeak-ng; writes a watermarked WAV and its signed manifest."""
    gencraft.use_thread_policy("decode")  # before torch loads: a voice decodes, as `gencraft generate` does
    import sys

    from gencraft.apps.speech import speak
    from gencraft.generate.speech import Speaker, check_speed, check_text

    if file is not None:
        try:
            text = open(file, encoding="utf-8").read()  # noqa: SIM115
        except FileNotFoundError:
            raise NotFoundError(f"--file {file}: no such file", param="file") from None
        except UnicodeDecodeError:
            raise UsageError(f"--file {file}: not UTF-8 text", param="file") from None
    check_text(text or "")
    check_speed(speed)
    if engine is not None:
        if engine != "espeak":
            raise UsageError(f"--engine {engine}: expected espeak", param="engine")
        voice = voice if voice.startswith("espeak") else "espeak"
    sp = Speaker.load(voice)
    err = Console(stderr=True, highlight=False)
    long = stream or len(text) > 20_000  # sentence by sentence into the file, no samples kept
    with release_policy(watermark=not no_watermark, store=not no_store and out != "-") as policy:
        if out == "-":  # raw PCM for a player: `gencraft speak espeak "..." --out - | aplay -f S16_LE -r 22050`
            def play(pcm: bytes) -> None:
                sys.stdout.buffer.write(pcm)
                sys.stdout.buffer.flush()

            speak(text, sp, speed=speed, seed=seed, policy=policy, keep_audio=False, on_chunk=play)
            return
        r = speak(text, sp, out=out, speed=speed, seed=seed, policy=policy, keep_audio=not long,
                  on_sentence=(lambda s, secs: err.print(f"[dim]{secs:5.1f} s  {escape(s[:70])}[/]")) if long else None)
    wm = "watermarked" if r.watermarked else "not watermarked"
    signed = "signed" if r.signed else "unsigned (run `gencraft keys init`)"
    console.print(f"wrote [cyan]{escape(str(r.path))}[/] ({r.duration:.1f} s, {r.engine}, {wm}, {signed}; "
                  f"synthesis {r.synthesis_seconds:.2f} s, first audio after {r.seconds_to_first_audio * 1000:.0f} ms)")


def register(app: typer.Typer) -> None:
    app.command("speak")(speak_cmd)
    data_app.command("speech")(data_speech)
    data_app.command("speech-sample")(data_speech_sample)

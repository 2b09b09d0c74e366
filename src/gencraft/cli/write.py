"""`gencraft write continue|draft`: the writing assistant (memory, author's note, world info)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from gencraft.apps._common import load_model, release_policy
from gencraft.cli.library import NO_STORE_HELP, say_stored
from gencraft.errors import UsageError


def _read(path: Path | None, what: str) -> str:
    if path is None:
        return ""
    if not path.is_file():
        raise UsageError(f"--{what} {path}: file not found", param=what)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--{what} {path}: not UTF-8 text", param=what) from None


def _context(memory: str | None, memory_file: Path | None, note: str | None, note_depth: int, world: Path | None):
    from gencraft.apps.write import Context

    mem = memory or _read(memory_file, "memory-file")
    lore = Context.load_lore(str(world)) if world is not None else []
    if note_depth < 0:
        raise UsageError(f"--note-depth {note_depth}: must be >= 0", param="note_depth")
    return Context(memory=mem, note=note or "", note_depth=note_depth, lore=lore)


def _emit(written, *, policy, watermark, model, name: str, prompt: str, out: Path | None, fmt: str, seed: int,
          spell: bool, read_aloud: str | None = None) -> None:
    from gencraft.apps.write import release_written

    rel = release_written(written, policy=policy, model=model, model_name=name, prompt=prompt, seed=seed,
                          watermark=watermark, out=out, fmt=fmt)
    if out is not None:
        typer.echo(f"wrote {out} (+ {out.name}.manifest.json)", err=True)
    else:
        sys.stdout.write(rel.text if rel.text.endswith("\n") else rel.text + "\n")
    say_stored([rel])
    if spell:
        for s in written.spelling:
            typer.echo(f"spelling: {s.word!r} at {s.start}: {', '.join(s.candidates) or '(no suggestion)'}",
                       err=True)
    if read_aloud is not None:
        from gencraft.apps.voiceover import read_aloud as narrate

        wav = (out if out is not None else Path("draft")).with_suffix(".wav")
        r = narrate(rel.text, read_aloud, wav, seed=seed, policy=policy)
        typer.echo(f"read aloud into {wav} ({r.extra['samples'] / r.sample_rate:.1f} s, {r.engine})", err=True)


def _fmt(fmt: str, out: Path | None) -> str:
    if fmt == "auto":
        return "md" if out is None or out.suffix.lower() in (".md", ".markdown") else "txt"
    if fmt not in ("md", "txt"):
        raise UsageError(f"--format {fmt}: use md or txt", param="format")
    return fmt


def register(app: typer.Typer) -> None:
    w = typer.Typer(help="Writing assistant: continue a draft or draft a piece (outline, then sections).",
                    no_args_is_help=True)

    @w.command("continue")
    def continue_cmd(
        model: str = typer.Argument(..., help="Run name/path or hf:PATH."),
        file: Path = typer.Option(None, "--file", "-f", help="The draft to continue (UTF-8 text)."),
        text: str = typer.Option(None, "--text", help="The draft, inline."),
        tokens: int = typer.Option(200, "--tokens", help="Most new tokens."),
        memory: str = typer.Option(None, "--memory", help="Facts the model must keep (always at the top)."),
        memory_file: Path = typer.Option(None, "--memory-file", help="Memory from a file."),
        note: str = typer.Option(None, "--note", help="Author's note: style/tone, inserted near the end."),
        note_depth: int = typer.Option(3, "--note-depth", help="Lines from the end where the note goes."),
        world: Path = typer.Option(None, "--world", help='Lorebook JSON: [{"keys": [...], "content": "..."}].'),
        seed: int = typer.Option(0, "--seed", help="Same seed, same text."),
        temperature: float = typer.Option(0.8, "--temperature", "-t"),
        top_p: float = typer.Option(0.95, "--top-p"),
        lang: str = typer.Option(None, "--lang", help="en or zh (default: detected)."),
        spell: bool = typer.Option(False, "--spell", help="Print English spelling suggestions on stderr."),
        watermark: bool = typer.Option(True, "--watermark/--no-watermark", help="Watermark when keys exist."),
        out: Path = typer.Option(None, "--out", "-o", help="Write here (+ .manifest.json) instead of stdout."),
        fmt: str = typer.Option("auto", "--format", help="md or txt (default: from --out)."),
        no_store: bool = typer.Option(False, "--no-store", help=NO_STORE_HELP),
        read_aloud: str = typer.Option(None, "--read-aloud", help="Narrate the result with this voice (a tts run "
                                       "or espeak) into OUT.wav (+ manifest)."),
    ) -> None:
        """Continue a draft with memory, author's note and world info."""
        from gencraft.apps import write as W

        if (file is None) == (text is None):
            raise UsageError("give the draft with --file or --text (one of them)", param="file")
        if lang not in (None, "en", "zh"):
            raise UsageError(f"--lang {lang}: use en or zh", param="lang")
        draft = text if text is not None else _read(file, "file")
        ctx = _context(memory, memory_file, note, note_depth, world)
        tm = load_model(model)
        with release_policy(watermark=watermark, store=not no_store) as policy:
            wm = policy.text_watermark(tm.tokenizer.vocab_size, temperature=temperature)
            res = W.continue_text(tm, draft, tokens=tokens, ctx=ctx, seed=seed, temperature=temperature,
                                  top_p=top_p, lang=lang, spell=spell, watermark=wm)
            _emit(res, policy=policy, watermark=wm, model=tm, name=model, prompt=draft, out=out,
                  fmt=_fmt(fmt, out), seed=seed, spell=spell, read_aloud=read_aloud)

    @w.command("draft")
    def draft_cmd(
        model: str = typer.Argument(..., help="Run name/path or hf:PATH."),
        title: str = typer.Option(..., "--title", help="Title or topic."),
        kind: str = typer.Option("blog", "--kind", help="news, report, blog or story."),
        sections: int = typer.Option(3, "--sections", help="Number of sections in the outline."),
        section_tokens: int = typer.Option(150, "--section-tokens", help="Token budget of each section."),
        heading: list[str] = typer.Option([], "--heading", help="Use these headings instead of an outline."),
        memory: str = typer.Option(None, "--memory"),
        memory_file: Path = typer.Option(None, "--memory-file"),
        note: str = typer.Option(None, "--note"),
        note_depth: int = typer.Option(3, "--note-depth"),
        world: Path = typer.Option(None, "--world"),
        seed: int = typer.Option(0, "--seed"),
        temperature: float = typer.Option(0.8, "--temperature", "-t"),
        top_p: float = typer.Option(0.95, "--top-p"),
        lang: str = typer.Option(None, "--lang", help="en or zh (default: detected from the title)."),
        spell: bool = typer.Option(False, "--spell"),
        watermark: bool = typer.Option(True, "--watermark/--no-watermark"),
        out: Path = typer.Option(None, "--out", "-o"),
        fmt: str = typer.Option("auto", "--format", help="md or txt."),
        no_store: bool = typer.Option(False, "--no-store", help=NO_STORE_HELP),
        read_aloud: str = typer.Option(None, "--read-aloud", help="Narrate the result with this voice (a tts run "
                                       "or espeak) into OUT.wav (+ manifest)."),
    ) -> None:
        """Draft a piece from a title: outline first, then each section with its own budget."""
        from gencraft.apps import write as W

        if lang not in (None, "en", "zh"):
            raise UsageError(f"--lang {lang}: use en or zh", param="lang")
        f = _fmt(fmt, out)
        ctx = _context(memory, memory_file, note, note_depth, world)
        tm = load_model(model)
        with release_policy(watermark=watermark, store=not no_store) as policy:
            wm = policy.text_watermark(tm.tokenizer.vocab_size, temperature=temperature)
            res = W.draft(tm, title, kind=kind, sections=len(heading) or sections, section_tokens=section_tokens,
                          ctx=ctx, seed=seed, temperature=temperature, top_p=top_p, lang=lang,
                          markdown=f == "md", headings=heading or None, spell=spell, watermark=wm)
            _emit(res, policy=policy, watermark=wm, model=tm, name=model, prompt=title, out=out, fmt=f, seed=seed,
                  spell=spell, read_aloud=read_aloud)

    app.add_typer(w, name="write")

"""`gencraft guard ...` (moderation, copy checks, watermark detection, memorization) and `gencraft verify`.

Exit codes: 0 = fine; 1 = the check found something (``check``: blocked; ``copies``: copy risk;
``watermark detect``: no watermark; ``verify``: tampered or unsigned); 2 = an error; 3 = ``verify``: intact
but signed by a key this machine does not trust (not its own, not added with ``gencraft keys trust``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from gencraft.errors import NotFoundError, UsageError

guard_app = typer.Typer(help="Moderation, copy checks, watermarks and memorization.", no_args_is_help=True)
watermark_app = typer.Typer(help="Detect gencraft watermarks in text and images.", no_args_is_help=True)
guard_app.add_typer(watermark_app, name="watermark")
console = Console(highlight=False)


def _exit_found() -> None:
    """Exit 1 ("the check found something"). ``SystemExit`` because ``gencraft.cli.main`` runs click
    with ``standalone_mode=False``, where ``typer.Exit`` codes are returned rather than exited with."""
    sys.exit(1)


def _read_input(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    p = Path(file)
    if not p.is_file():
        raise NotFoundError(f"file {p} not found", param="file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{p} is not UTF-8 text; pass a text file or - for stdin", param="file") from None


def _emit(obj: dict) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2))


@guard_app.command("check")
def check_cmd(
    file: str = typer.Argument(..., help="Text file, or - for stdin."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    lexicon: list[Path] = typer.Option([], "--lexicon", help="Extra lexicon file(s): 'CATEGORY TERM' lines."),
    action: list[str] = typer.Option([], "--action", help="CATEGORY=allow|flag|mask|block (repeatable)."),
    no_classifier: bool = typer.Option(False, "--no-classifier", help="Lexicons and patterns only."),
) -> None:
    """Moderate a text: categories hit, spans, action, masked text. Exit 1 when blocked."""
    from gencraft.guard.moderation import Policy, load_lexicon, moderate

    actions = {}
    for a in action:
        cat, sep, act = a.partition("=")
        if not sep:
            raise UsageError(f"--action {a!r}: expected CATEGORY=ACTION, e.g. profanity=block", param="action")
        actions[cat.strip()] = act.strip()
    terms = [t for p in lexicon for t in load_lexicon(p)]
    policy = Policy(actions=actions, terms=terms, classifier_threshold=None if no_classifier else 0.95)
    report = moderate(_read_input(file), policy)
    if as_json:
        _emit(report.to_dict())
    else:
        console.print(f"action: [bold]{report.action}[/]  categories: "
                      f"{', '.join(f'{c} ({s:.2f})' for c, s in report.categories.items()) or 'none'}")
        for h in report.hits:
            console.print(f"  {h.category:<10} {h.start}-{h.end} {escape(repr(h.text))} "
                          f"[dim]({h.source}: {escape(h.rule)})[/]")
        if report.masked_text != "" and any(h for h in report.hits):
            console.print("masked:", style="dim")
            typer.echo(report.masked_text)
    if report.blocked:
        _exit_found()


@guard_app.command("index")
def index_cmd(
    run: str = typer.Argument(..., help="Run name or path."),
    dataset: str = typer.Option(None, "--dataset", help="Dataset to index (default: the run's)."),
    stride: int = typer.Option(1, "--stride", help="Index every STRIDE-th n-gram (smaller, less exact)."),
) -> None:
    """Build RUN/copy_index/ from the training split of the run's dataset."""
    from gencraft.guard.copies import CopyIndex, build_run_index

    if stride < 1:
        raise UsageError("--stride must be >= 1", param="stride")
    path = build_run_index(run, dataset=dataset, stride=stride)
    meta = CopyIndex(path).meta
    console.print(f"indexed {meta['documents']} documents, {meta['chars']} characters -> {path}", markup=False)


@guard_app.command("copies")
def copies_cmd(
    run: str = typer.Argument(..., help="Run name or path (its copy_index/ is built on first use)."),
    file: str = typer.Argument(..., help="Text file, or - for stdin."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    max_tokens: int = typer.Option(50, "--max-tokens", help="Copy-risk threshold in tokens."),
    max_chars: int = typer.Option(100, "--max-chars", help="Copy-risk threshold in characters."),
) -> None:
    """Longest verbatim span from the training data, n-gram overlap, source documents. Exit 1 on copy risk."""
    from gencraft.guard.copies import load_run_index

    report = load_run_index(run).check(_read_input(file), max_tokens=max_tokens, max_chars=max_chars)
    if as_json:
        _emit(report.to_dict())
    else:
        verdict = "[bold red]copy-risk[/]" if report.copy_risk else "[green]ok[/]"
        tok = f", {report.longest_tokens} tokens" if report.longest_tokens is not None else ""
        console.print(f"{verdict}  longest verbatim span: {report.longest_chars} characters{tok}")
        frac = f"{report.char_ngram_fraction:.1%} of {report.char_n}-char n-grams"
        if report.token_ngram_fraction is not None:
            frac += f", {report.token_ngram_fraction:.1%} of {report.token_n}-token n-grams"
        console.print(f"found in training data: {frac}", markup=False)
        for s in report.spans:
            console.print(f"  {s.length} {s.unit}s at {s.start}: doc {s.doc_id} of {s.path} "
                          f"(license {s.license}) {s.excerpt[:60]!r}", markup=False)
    if report.copy_risk:
        _exit_found()


@watermark_app.command("detect")
def detect_cmd(
    file: str = typer.Argument(..., help="A generated file: text, PNG/JPEG/GIF image, MIDI, WAV/FLAC/OGG audio."),
    run: str = typer.Option(None, "--run", help="Run (or hf:PATH) whose tokenizer re-tokenizes text and music "
                            "(default: the manifest's)."),
    alpha: float = typer.Option(1e-4, "--alpha", help="Largest p-value that counts as watermarked."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Detect this machine's watermark in FILE (p-value; images also bit accuracy). Exit 1 if none."""
    from gencraft.guard.keys import load_keys
    from gencraft.guard.release import media_for_file

    if not 0 < alpha < 1:
        raise UsageError(f"--alpha {alpha}: use a p-value between 0 and 1, e.g. 1e-4", param="alpha")
    keys = load_keys(required=True)
    p = Path(file)
    if not p.is_file():
        raise NotFoundError(f"file {p} not found", param="file")
    data = p.read_bytes()
    media = media_for_file(p, data)
    if media.detect is None:
        raise UsageError(f"{p}: gencraft has no watermark detector for {media.media_type} yet", param="file")
    try:
        result = media.detect(p, data, keys, run)
    except UsageError as e:
        raise UsageError(f"{p}: {e}", param=e.param) from None
    result.update(kind=media.kind, key_id=keys.key_id, alpha=alpha, detected=result["p_value"] <= alpha)
    line = result.pop("line")
    if as_json:
        _emit(result)
    else:
        verdict = "[bold green]watermarked[/]" if result["detected"] else "[yellow]no watermark found[/]"
        console.print(f"{verdict}  {escape(line)}  [dim]key {keys.key_id}[/]")
    if not result["detected"]:
        _exit_found()


@guard_app.command("memorization")
def memorization_cmd(
    run: str = typer.Argument(..., help="Run name or path."),
    prompts: int = typer.Option(100, "--prompts", help="How many training windows to try."),
    prefix: int = typer.Option(50, "--prefix", help="Prompt length in tokens."),
    suffix: int = typer.Option(50, "--suffix", help="Continuation length in tokens that must match."),
    seed: int = typer.Option(0, "--seed", help="Seed of the window sample."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Extractability (Carlini et al.): share of training prefixes whose greedy continuation is verbatim."""
    from gencraft.guard.memorization import extractability

    for name, v in (("prompts", prompts), ("prefix", prefix), ("suffix", suffix)):
        if v < 1:
            raise UsageError(f"--{name} must be >= 1", param=name)
    r = extractability(run, prompts=prompts, prefix_tokens=prefix, suffix_tokens=suffix, seed=seed)
    if as_json:
        _emit(r.to_dict())
    else:
        console.print(f"extractable: {r.extracted}/{r.prompts} = {r.extractable_fraction:.1%} "
                      f"({r.prefix_tokens}-token prefixes, {r.suffix_tokens}-token greedy continuations); "
                      f"mean tokens matched before the first miss: {r.mean_matched_prefix:.1f}", markup=False)


def verify_cmd(
    file: str = typer.Argument(..., help="A generated file: text (with FILE.manifest.json or front matter), PNG, or "
                               "GIF, WAV, MIDI (with FILE.manifest.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check a generated file's signed provenance: valid and signed by a trusted key (exit 0), intact but
    signed by an unknown key (exit 3), tampered or unsigned (exit 1)."""
    from gencraft.guard.release import verify_file

    r = verify_file(file)
    if as_json:
        _emit(r.to_dict())
    else:
        style = {"valid": "bold green", "unknown_key": "yellow", "tampered": "bold red", "unsigned": "yellow"}[r.status]
        console.print(f"[{style}]{r.status}[/]: {escape(r.reason)}")
        m = r.manifest or {}
        if r.status == "valid":
            console.print(f"  generator {m.get('generator')}, run {m.get('run_id')}, created {m.get('created')}, "
                          f"watermark {'key ' + m['watermark']['key_id'] if m.get('watermark') else 'none'}",
                          markup=False)
        if r.c2pa is not None:
            console.print(f"  C2PA manifest: {r.c2pa.get('validation_state')}", markup=False)
    if r.status == "unknown_key":
        sys.exit(3)
    if not r.ok:
        _exit_found()


def register(app: typer.Typer) -> None:
    app.add_typer(guard_app, name="guard")
    app.command("verify")(verify_cmd)

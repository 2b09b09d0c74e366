"""`gencraft generate RUN|hf:PATH --prompt TEXT`: every decoding option of the engine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

import gencraft
from gencraft.apps._common import release_policy
from gencraft.cli.library import NO_STORE_HELP
from gencraft.errors import NotFoundError, UsageError


def _parse_bias(items: list[str], tokenizer) -> dict[int, float]:
    """``TOKEN=BIAS`` pairs; TOKEN is a token id or a text that is exactly one token."""
    out: dict[int, float] = {}
    for item in items:
        key, sep, val = item.rpartition("=")
        if not sep or not key:
            raise UsageError(f"--logit-bias {item!r}: expected TOKEN=BIAS, e.g. 42=-100", param="logit_bias")
        try:
            bias = float(val)
        except ValueError:
            raise UsageError(f"--logit-bias {item!r}: bias {val!r} is not a number", param="logit_bias") from None
        if key.lstrip("-").isdigit():
            tid = int(key)
        else:
            ids = tokenizer.encode(key)
            if len(ids) != 1:
                raise UsageError(f"--logit-bias {item!r}: {key!r} is {len(ids)} tokens, not one; give a token id",
                                 param="logit_bias")
            tid = ids[0]
        out[tid] = bias
    return out


def generate_cmd(
    model: str = typer.Argument(..., help="Run name or path, or hf:PATH for a local Hugging Face model."),
    prompt: str = typer.Option(None, "--prompt", "-p", help="Text to continue."),
    prompt_file: Path = typer.Option(None, "--prompt-file", help="Read the prompt from this file (UTF-8)."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", "-m", help="Most tokens to generate."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="0 = greedy; <1 sharper, >1 flatter."),
    top_k: int = typer.Option(0, "--top-k", help="Sample from the k most likely tokens (0 = off)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass in (0, 1]."),
    min_p: float = typer.Option(0.0, "--min-p", help="Drop tokens below this fraction of the top probability."),
    typical_p: float = typer.Option(1.0, "--typical-p", help="Locally typical sampling mass in (0, 1]."),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", help="CTRL penalty (>1 discourages)."),
    presence_penalty: float = typer.Option(0.0, "--presence-penalty", help="OpenAI presence penalty [-2, 2]."),
    frequency_penalty: float = typer.Option(0.0, "--frequency-penalty", help="OpenAI frequency penalty [-2, 2]."),
    no_repeat_ngram: int = typer.Option(0, "--no-repeat-ngram", help="Never repeat an n-gram of this size."),
    ban: list[str] = typer.Option([], "--ban", help="A word or string never to generate (repeatable)."),
    logit_bias: list[str] = typer.Option([], "--logit-bias", help="TOKEN=BIAS (token id or one-token text)."),
    num_beams: int = typer.Option(1, "--num-beams", help="Beam search with this many beams (1 = off)."),
    beam_groups: int = typer.Option(1, "--beam-groups", help="Diverse beam search groups."),
    diversity_penalty: float = typer.Option(0.0, "--diversity-penalty", help="Penalty between beam groups."),
    length_penalty: float = typer.Option(1.0, "--length-penalty", help="Beam score = logp / length**this."),
    early_stopping: bool = typer.Option(False, "--early-stopping", help="Stop beams once n are finished."),
    stop: list[str] = typer.Option([], "--stop", help="Stop before this string (repeatable)."),
    n: int = typer.Option(1, "--n", "-n", help="Number of samples."),
    seed: int = typer.Option(None, "--seed", help="Seed: same seed, same output."),
    max_time: float = typer.Option(None, "--max-time", help="Stop after this many seconds."),
    stream_out: bool = typer.Option(True, "--stream/--no-stream", help="Print tokens as they come (one sample)."),
    logprobs: int = typer.Option(0, "--logprobs", help="Show each token's log-probability and N alternatives."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    device: str = typer.Option(None, "--device", help="cpu (default) or cuda."),
    dtype: str = typer.Option("float32", "--dtype", help="Weights: float32, bfloat16, float16 or int8 (8-bit "
                              "matrices while decoding a gencraft GPT on the CPU)."),
    out_file: Path = typer.Option(None, "--out", "-o", help="Write the text here with its signed provenance "
                                  "manifest (FILE.manifest.json; several samples: FILE-1, FILE-2...)."),
    front_matter: bool = typer.Option(False, "--front-matter", help="With --out: carry the manifest as "
                                      "Markdown front matter instead of a sidecar."),
    no_watermark: bool = typer.Option(False, "--no-watermark", help="Do not watermark this output "
                                      "(the manifest says so)."),
    watermark_scheme: str = typer.Option("tournament", "--watermark-scheme", help="tournament (distortion-free, "
                                         "the default) or green-list (a logits bias: stronger on low-entropy "
                                         "text, costs perplexity)."),
    strict_licenses: bool = typer.Option(False, "--strict-licenses", help="Refuse to generate when a "
                                         "training source's license is unknown."),
    copy_check: bool = typer.Option(True, "--copy-check/--no-copy-check", help="Check outputs against the "
                                    "run's training data for verbatim copies."),
    no_store: bool = typer.Option(False, "--no-store", help=NO_STORE_HELP),
    allow_unseen_tokens: bool = typer.Option(False, "--allow-unseen-tokens", help="Let the model sample tokens "
                                             "its training data never holds (byte-fallback pieces: stray "
                                             "characters from undertrained models)."),
) -> None:
    """Generate text from a trained run or a local Hugging Face model."""
    gencraft.use_thread_policy("decode")  # before torch loads
    import torch

    from gencraft import guard
    from gencraft.apps.text import generate
    from gencraft.backends import load
    from gencraft.generate import GenerationConfig

    if prompt is not None and prompt_file is not None:
        raise UsageError("give --prompt or --prompt-file, not both", param="prompt")
    if prompt_file is not None:
        if not prompt_file.is_file():
            raise NotFoundError(f"--prompt-file {prompt_file}: file not found", param="prompt_file")
        try:
            prompt = prompt_file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"--prompt-file {prompt_file}: not UTF-8 text", param="prompt_file") from None
    prompt = prompt or ""
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int8": "int8"}
    if dtype not in dtypes:
        raise UsageError(f"--dtype {dtype!r}: expected one of {', '.join(dtypes)}", param="dtype")
    options = dict(
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
        typical_p=typical_p, repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty, no_repeat_ngram_size=no_repeat_ngram, bad_words=list(ban),
        num_beams=num_beams, num_beam_groups=beam_groups, diversity_penalty=diversity_penalty,
        length_penalty=length_penalty, early_stopping=early_stopping, n=n, stop=list(stop), seed=seed,
        max_time=max_time, logprobs=logprobs > 0, top_logprobs=logprobs,
    )
    cfg = GenerationConfig.from_options(**options)  # bad options fail before the model loads
    if device and device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"--device {device!r}: expected cpu or cuda", param="device")
    tm = load(model, device=device, dtype=None if dtype == "float32" else dtypes[dtype])
    if logit_bias:
        cfg = GenerationConfig.from_options(cfg, logit_bias=_parse_bias(logit_bias, tm.tokenizer))
    guard.check_licenses(tm.info, strict=strict_licenses)  # warns once per run, or refuses, before sampling
    out = sys.stdout
    streaming = stream_out and not as_json and cfg.n == 1 and cfg.num_beams == 1 and out_file is None

    def show(delta: str) -> None:
        out.write(delta)
        out.flush()

    if streaming:
        show(prompt)
    with release_policy(watermark=not no_watermark, watermark_scheme=watermark_scheme, copy_check=copy_check,
                             strict_licenses=strict_licenses, store=not no_store) as policy:
        released = generate(tm, prompt, cfg, policy=policy, out=out_file, front_matter=front_matter,
                            on_delta=show if streaming else None, name=model,
                            allow_unseen_tokens=allow_unseen_tokens)
    results = [rel.result for rel in released]
    for rel in released:
        rel.result.text = rel.text  # masked where the policy says mask
        _note(rel.report)
        if rel.path is not None:
            typer.echo(f"wrote {rel.path}" + ("" if front_matter else f" and {rel.path}.manifest.json"), err=True)
    if streaming:  # the streamed text is already shown
        out.write("\n")
        _print_logprobs(results, out)
        return
    if as_json:
        out.write(json.dumps({"model": model, "prompt": prompt, "config": cfg.public_dict(),
                              "results": [r.to_dict() for r in results]}, ensure_ascii=False, indent=2) + "\n")
        return
    for i, r in enumerate(results):
        if len(results) > 1:
            score = f", score {r.score:.3f}" if r.score is not None else ""
            out.write(f"--- sample {i + 1} ({r.finish_reason}{score}) ---\n")
        out.write(prompt + r.text + "\n")
    _print_logprobs(results, out)


def _note(report) -> None:
    """One stderr line when the guard found something in an output."""
    parts = []
    if report.moderation is not None and report.moderation.categories:
        parts.append(f"moderation {report.action}: {', '.join(report.moderation.categories)}")
    if report.copies is not None and report.copies.copy_risk:
        parts.append(f"copy-risk: {report.copies.longest_chars} characters copied from the training data")
    if parts:
        typer.echo("guard: " + "; ".join(parts), err=True)


def _print_logprobs(results: list, out) -> None:
    for r in results:
        if not r.logprobs:
            continue
        out.write("token\tlogprob\ttop alternatives\n")
        for lp in r.logprobs:
            alts = "  ".join(f"{t!r}:{v:.3f}" for t, _, v in lp.top)
            out.write(f"{lp.token!r}\t{lp.logprob:.3f}\t{alts}\n")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_cmd)

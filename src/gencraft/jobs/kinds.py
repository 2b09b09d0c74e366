"""What a studio job can be: one :class:`JobKind` per kind of long work, in the table :data:`KINDS`.

A kind is a name, a pydantic model of its parameters, the slot it runs in, and two functions:

- ``check(params, ctx: CheckContext) -> Claims`` runs in the server when the job is submitted: it raises a :class:`~gencraft.errors.GencraftError` for anything a
  person got wrong (a dataset that is not there is a 404, a bad option a 400) and fills in what
  the job will write (``params.out`` when left empty) and read;
- ``run(params, ctx) -> dict`` runs in the worker process and returns the job's result (JSON).
  Training reports its progress itself, through :class:`gencraft.train.metrics.RunLog`; other
  work calls ``ctx.say(text)`` for the log the studio shows.

Adding a kind (a "learn from my ratings" tune, speech data...) is a parameters model, these two
functions and one entry in :data:`KINDS`; docs/architecture.md ("Jobs") has the checklist.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gencraft.apps._common import load_model, release_policy
from gencraft.data.images import BUILTIN_DIGITS, check_size, parse_color, prepare_images
from gencraft.data.music import prepare_music
from gencraft.data.prepare import prepare
from gencraft.errors import GuardError, NotFoundError, UsageError
from gencraft.io import write_json
from gencraft.jobs.uploads import upload_files_dir
from gencraft.library import Library
from gencraft.train.metrics import StopRequested, stop_requested

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Params(BaseModel):
    """Base of every kind's parameters: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Claims:
    """What a job will write and read: no two live jobs write the same run or dataset, and a job
    for a missing dataset or run is refused when it is submitted."""

    writes_run: str | None = None
    writes_dataset: str | None = None
    reads_dataset: str | None = None
    reads_run: str | None = None
    reads_upload: str | None = None


@dataclass
class CheckContext:
    """What a kind's ``check`` gets besides its parameters (in the server, when the job is submitted)."""

    home: Path
    taken_runs: set[str] = field(default_factory=set)  # runs live jobs will write (not free for a new name)
    taken_datasets: set[str] = field(default_factory=set)


@dataclass
class JobContext:
    """What a kind's ``run`` gets besides its parameters (in the worker process)."""

    job_id: str
    home: Path
    attempt: int  # 1 for the first run, +1 for each resume
    say: Callable[[str], None] = field(default=print)
    event: Callable[[dict[str, Any]], None] = field(default=lambda event: None)  # one of the job's events
    started: float = field(default_factory=time.monotonic)

    @property
    def out_dir(self) -> Path:
        """Where the job keeps the files it makes (``HOME/jobs/ID/outputs``; served by the job's files route)."""
        return self.home / "jobs" / self.job_id / "outputs"

    def progress(self, done: int, total: int, unit: str) -> None:
        """Report ``done`` of ``total`` (``unit``: what a rate counts, e.g. ``records/s``) as the job's
        progress, with the rate and ETA since the job started, the way a training reports its steps.
        A cancelled job stops here (:class:`~gencraft.train.metrics.StopRequested`), between two items."""
        if stop_requested():
            raise StopRequested("the job was cancelled")
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if done and elapsed > 0 else None
        self.event({"type": "progress", "step": done, "total": total, "loss": None,
                    "rate": None if rate is None else round(rate, 3), "unit": unit,
                    "eta_s": None if rate is None else round((total - done) / rate, 1), "elapsed_s": round(elapsed, 1)})


@dataclass(frozen=True)
class JobKind:
    name: str
    summary: str
    params: type[Params]
    slot: Literal["train", "work"]  # "train": heavy, one at a time by default; "work": data and the rest
    check: Callable[[Any, CheckContext], Claims]
    run: Callable[[Any, JobContext], dict[str, Any]]
    # True: a cancel asks the work to stop at its next report (a training loop's RunLog raises
    # StopRequested; the run keeps its checkpoint). False: the worker is terminated at once (data
    # preparation writes its dataset atomically, so nothing half-written is left).
    stops_gracefully: bool = False


def parse_params(kind: JobKind, raw: Any) -> Params:
    """``raw`` (a JSON object) as the kind's parameters; a bad field is a UsageError naming it."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError("params: expected a JSON object", param="params")
    try:
        return kind.params.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ())) or "params"
        msg = "unknown parameter" if err.get("type") == "extra_forbidden" else err.get("msg", "invalid value")
        raise UsageError(f"params.{where}: {msg} (job kind {kind.name})", param=f"params.{where}") from None


# ---------------------------------------------------------------- shared checks


def check_name(name: str, what: str, param: str) -> str:
    """A dataset or run name made in the studio: a plain name, never a path."""
    if not NAME.match(name):
        raise UsageError(f"{param}: {name!r} is not a valid {what} name (letters, digits, '.', '_', '-'; "
                         "at most 64, no path)", param=param)
    return name


def dataset_dir(home: Path, name: str) -> Path:
    return home / "datasets" / name


def run_dir(home: Path, name: str) -> Path:
    return home / "runs" / name


def dataset_manifest(home: Path, name: str, param: str = "params.dataset") -> dict[str, Any]:
    """The manifest of dataset ``name`` (a 404 naming it when it is not there, or was deleted)."""
    check_name(name, "dataset", param)
    p = dataset_dir(home, name) / "manifest.json"
    if not p.is_file():
        raise NotFoundError(f"{param}: dataset {name!r} not found (deleted, or never prepared); "
                            "GET /v1/gencraft/datasets lists them", param=param)
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{param}: dataset {name!r} has an unreadable manifest ({e}); prepare it again",
                         param=param) from None
    return m if isinstance(m, dict) else {}


def dataset_kind(manifest: dict[str, Any]) -> str:
    """``text``, ``music``, ``images`` or ``speech``."""
    return str(manifest.get("kind") or "text")


def free_run_name(home: Path, base: str, taken: set[str] = frozenset()) -> str:
    """``base``, or ``base-2``, ``base-3``... the first that is neither a run nor claimed by a live job."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", base)[:56] or "run"
    name, i = base, 1
    while run_dir(home, name).exists() or name in taken:
        i += 1
        name = f"{base}-{i}"
    return name


def _new_output(home: Path, folder: str, name: str, param: str, what: str) -> None:
    """A new dataset or run (one a live job is about to write is the manager's 409, naming the job)."""
    check_name(name, what, param)
    if (home / folder / name).exists():
        raise UsageError(f"{param}: a {what} named {name!r} already exists; choose another name "
                         "(or delete it first)", param=param)


def _upload(home: Path, upload: str | None, builtin: str | None, builtins: tuple[str, ...], param: str) -> Claims:
    if (upload is None) == (builtin is None):
        raise UsageError(f"params.upload: give an upload id (POST /v1/gencraft/uploads) or one of the "
                         f"built-in sources ({', '.join(builtins) or 'none'})", param="params.upload")
    if builtin is not None:
        if builtin not in builtins:
            raise UsageError(f"params.source: {builtin!r} is not a built-in source; expected "
                             f"{', '.join(builtins) or 'none (upload your files)'}", param="params.source")
        return Claims()

    upload_files_dir(home, upload)  # NotFoundError when it is not there
    return Claims(reads_upload=upload)


# ---------------------------------------------------------------- data


class TextDataParams(Params):
    out: str
    upload: str | None = None
    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: int | None = None
    license: str | None = None
    unit: Literal["auto", "file", "paragraph", "line"] = "auto"
    field: str | None = None
    column: str | None = None
    dedupe: bool = True
    near_dup_threshold: float = 0.8
    min_chars: int = 1
    max_chars: int | None = None
    val_fraction: float = 0.1
    split: Literal["hash", "tail"] = "hash"
    seed: int = 0


def _check_text_data(p: TextDataParams, ctx: CheckContext) -> Claims:
    home = ctx.home
    _new_output(home, "datasets", p.out, "params.out", "dataset")
    c = _upload(home, p.upload, None, (), "params.upload")
    c.writes_dataset = p.out
    return c


def _run_text_data(p: TextDataParams, ctx: JobContext) -> dict[str, Any]:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = prepare([upload_files_dir(ctx.home, p.upload)], dataset_dir(ctx.home, p.out), tokenizer=p.tokenizer,
                       vocab_size=p.vocab_size, field=p.field, column=p.column, license=p.license or None,
                       dedupe=p.dedupe, near_dup_threshold=p.near_dup_threshold, min_chars=p.min_chars,
                       max_chars=p.max_chars, val_fraction=p.val_fraction, split=p.split, unit=p.unit,
                       seed=p.seed, progress=ctx.say)
    for w in caught:
        ctx.say(f"warning: {w.message}")
    return {"dataset": path.name, "warnings": [str(w.message) for w in caught]}


class ImageDataParams(Params):
    out: str
    upload: str | None = None
    source: str | None = None  # "sklearn:digits"
    size: int = 32
    fit: Literal["crop", "pad"] = "crop"
    background: str = "#ffffff"
    channels: Literal["auto", "gray", "rgb"] = "auto"
    license: str | None = None


def _check_image_data(p: ImageDataParams, ctx: CheckContext) -> Claims:
    home = ctx.home

    _new_output(home, "datasets", p.out, "params.out", "dataset")
    check_size(p.size)
    parse_color(p.background, "params.background")
    c = _upload(home, p.upload, p.source, (BUILTIN_DIGITS,), "params.upload")
    c.writes_dataset = p.out
    return c


def _run_image_data(p: ImageDataParams, ctx: JobContext) -> dict[str, Any]:
    src = p.source or upload_files_dir(ctx.home, p.upload)
    m = prepare_images(src, size=p.size, out=dataset_dir(ctx.home, p.out), fit=p.fit, background=p.background,
                       channels=p.channels, license=p.license)
    ctx.say(f"{m['images']} images of {'x'.join(map(str, m['shape']))}, {len(m['classes'])} classes, "
            f"{len(m['skipped'])} skipped")
    return {"dataset": p.out, "images": m["images"], "skipped": len(m["skipped"])}


class MusicDataParams(Params):
    out: str
    upload: str | None = None
    source: str | None = None  # "music21:bach"
    transpose: int = 5
    val_fraction: float = 0.1
    seed: int = 0
    license: str | None = None
    limit: int | None = None


def _check_music_data(p: MusicDataParams, ctx: CheckContext) -> Claims:
    home = ctx.home
    _new_output(home, "datasets", p.out, "params.out", "dataset")
    c = _upload(home, p.upload, p.source, ("music21:bach",), "params.upload")
    c.writes_dataset = p.out
    return c


def _run_music_data(p: MusicDataParams, ctx: JobContext) -> dict[str, Any]:
    src = p.source or str(upload_files_dir(ctx.home, p.upload))
    path = prepare_music([src], out=dataset_dir(ctx.home, p.out), transpose_range=p.transpose,
                         val_fraction=p.val_fraction, seed=p.seed, license=p.license, limit=p.limit)
    return {"dataset": path.name}


class SpeechDataParams(Params):
    out: str
    upload: str
    license: str = Field(min_length=1, max_length=500, description="required: whose voice, with what consent")
    speaker: str = Field(min_length=1, max_length=200)
    language: Literal["auto", "en", "zh"] = "auto"
    min_seconds: float = Field(0.5, gt=0, le=60)
    max_seconds: float = Field(20.0, gt=0, le=600)
    min_sample_rate: int = Field(16000, ge=8000, le=192000)
    val_fraction: float = Field(0.05, ge=0, lt=0.5)
    seed: int = 0


def _check_speech_data(p: SpeechDataParams, ctx: CheckContext) -> Claims:
    _new_output(ctx.home, "datasets", p.out, "params.out", "dataset")
    if p.min_seconds >= p.max_seconds:
        raise UsageError(f"params.min_seconds: {p.min_seconds} is not below max_seconds {p.max_seconds}",
                         param="params.min_seconds")
    c = _upload(ctx.home, p.upload, None, (), "params.upload")
    c.writes_dataset = p.out
    return c


def _run_speech_data(p: SpeechDataParams, ctx: JobContext) -> dict[str, Any]:
    """``gencraft data speech`` on the upload (an LJSpeech folder: metadata.csv + wavs/, or x.wav + x.txt pairs)."""
    from gencraft.data.speech import prepare_speech

    src = upload_files_dir(ctx.home, p.upload)
    folders = [d for d in src.iterdir() if d.is_dir()]
    if not (src / "metadata.csv").is_file() and len(folders) == 1 and (folders[0] / "metadata.csv").is_file():
        src = folders[0]  # an LJSpeech folder dropped whole, or one archive of it
    path = prepare_speech(src, out=dataset_dir(ctx.home, p.out), license=p.license, speaker=p.speaker,
                          language=p.language, min_seconds=p.min_seconds, max_seconds=p.max_seconds,
                          min_sample_rate=p.min_sample_rate, val_fraction=p.val_fraction, seed=p.seed, progress=ctx.say)
    counts = json.loads((path / "manifest.json").read_text(encoding="utf-8")).get("counts", {})
    ctx.say(f"{counts.get('kept')} of {counts.get('found')} recordings kept; dropped: {counts.get('dropped') or 'none'}")
    return {"dataset": path.name, "counts": counts}


# ---------------------------------------------------------------- training


class TrainParams(Params):
    dataset: str
    model: Literal["gpt", "lstm", "text_vae", "tts"] = "gpt"
    preset: Literal["tiny", "small", "base"] = "tiny"
    out: str | None = None
    set: dict[str, str | int | float | bool] = {}
    max_time: float | None = None
    seed: int | None = None
    part: Literal["acoustic", "vocoder", "both"] | None = Field(
        None, description="tts only: train one part of the voice (default both)")


def _overrides(values: dict[str, Any]) -> list[str]:
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()]


def _check_train(p: TrainParams, ctx: CheckContext) -> Claims:
    home = ctx.home
    m = dataset_manifest(home, p.dataset)
    if dataset_kind(m) == "images":
        raise UsageError(f"params.dataset: {p.dataset!r} is an image dataset; train it with a train.image job",
                         param="params.dataset")
    if (dataset_kind(m) == "speech") != (p.model == "tts"):
        raise UsageError(f"params.model: {p.model} cannot train on {p.dataset!r}, a {dataset_kind(m)} dataset; "
                         "a voice (tts) trains on a speech dataset, the text families on text or music",
                         param="params.model")
    if p.model == "tts" and p.preset == "base":
        raise UsageError("params.preset: a voice has the presets tiny and small", param="params.preset")
    if p.out is None:
        p.out = free_run_name(home, f"{p.dataset}-{p.model}", ctx.taken_runs)
    else:
        _new_output(home, "runs", p.out, "params.out", "run")
    if p.max_time is not None and p.max_time <= 0:
        raise UsageError("params.max_time: must be more than 0 seconds", param="params.max_time")
    # the overrides and preset are checked now, not minutes later in the worker
    from gencraft.train.config import resolve

    if p.model not in ("text_vae", "tts"):
        resolve(p.model, p.preset, int(m.get("tokenizer", {}).get("vocab_size", 1)), _overrides(p.set))
    return Claims(writes_run=p.out, reads_dataset=p.dataset)


def _checkpoint_step(path: Path) -> int | None:
    state = path / "checkpoints" / "last" / "state.json"
    try:
        return int(json.loads(state.read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _run_train(p: TrainParams, ctx: JobContext) -> dict[str, Any]:
    from gencraft.guard.copies import index_run
    from gencraft.train.loop import train

    out = run_dir(ctx.home, p.out)
    if p.model == "tts":
        return _run_train_voice(p, ctx, out)
    resume = _checkpoint_step(out) is not None
    ctx.say(f"resuming {p.out} from step {_checkpoint_step(out)}" if resume else
            f"training {p.model} ({p.preset}) on {p.dataset} into run {p.out}")
    path = train(dataset_dir(ctx.home, p.dataset), model=p.model, preset=p.preset, out=out,
                 overrides=[] if resume else _overrides(p.set), resume=resume, max_time=p.max_time,
                 seed=p.seed, progress=False)
    index_run(path, ctx.say)  # as the train command does: generations can be checked for copies
    info = json.loads((path / "gencraft.json").read_text(encoding="utf-8"))
    m = info.get("metrics", {})
    ctx.say(f"done: step {m.get('step')}, best val loss {m.get('best_val_loss')}"
            + (f" ({m['stopped']})" if m.get("stopped") else ""))
    return {"run": path.name, "metrics": m}


def _run_train_voice(p: TrainParams, ctx: JobContext, out: Path) -> dict[str, Any]:
    """``gencraft train DATASET --model tts``: the acoustic model, then the vocoder (or ``part``)."""
    from gencraft.train.speech import train_speech

    steps = {d.parent.parent.name: _checkpoint_step(d.parent.parent) for d in out.glob("parts/*/checkpoints")}
    resume = any(v is not None for v in steps.values())
    ctx.say(f"resuming voice {p.out} ({', '.join(f'{k} from step {v}' for k, v in steps.items() if v is not None)})"
            if resume else f"training a voice ({p.preset}) on {p.dataset} into run {p.out}")
    path = train_speech(dataset_dir(ctx.home, p.dataset), preset=p.preset, part=p.part, out=out,
                        overrides=None if resume else _overrides(p.set), resume=resume, max_time=p.max_time,
                        seed=p.seed, progress=False)
    info = json.loads((path / "gencraft.json").read_text(encoding="utf-8"))
    return {"run": path.name, "metrics": info.get("metrics", {})}


class ImageTrainParams(Params):
    dataset: str
    model: Literal["vae", "dcgan", "stylegan"] = "dcgan"
    preset: Literal["tiny", "small", "base"] = "small"
    out: str | None = None
    steps: int | None = None
    set: dict[str, str | int | float | bool] = {}
    max_time: float | None = None
    seed: int | None = None


def _check_train_image(p: ImageTrainParams, ctx: CheckContext) -> Claims:
    home = ctx.home
    m = dataset_manifest(home, p.dataset)
    if dataset_kind(m) != "images":
        raise UsageError(f"params.dataset: {p.dataset!r} is a {dataset_kind(m)} dataset, not images; train it "
                         "with a train job", param="params.dataset")
    if p.steps is not None and p.steps < 1:
        raise UsageError("params.steps: must be at least 1", param="params.steps")
    if p.out is None:
        p.out = free_run_name(home, f"{p.dataset}-{p.model}", ctx.taken_runs)
    else:
        _new_output(home, "runs", p.out, "params.out", "run")
    return Claims(writes_run=p.out, reads_dataset=p.dataset)


def _run_train_image(p: ImageTrainParams, ctx: JobContext) -> dict[str, Any]:
    from gencraft.train.image import train_image

    out = run_dir(ctx.home, p.out)
    resume = _checkpoint_step(out) is not None
    ctx.say(f"resuming {p.out} from step {_checkpoint_step(out)}" if resume else
            f"training {p.model} ({p.preset}) on {p.dataset} into run {p.out}")
    info = train_image(dataset_dir(ctx.home, p.dataset), p.model, out=out, preset=p.preset,
                       overrides=_overrides(p.set) or None, resume=resume, max_time=p.max_time, seed=p.seed,
                       steps=p.steps, overwrite=not resume and ctx.attempt > 1)
    return {"run": p.out, "metrics": info.get("metrics", {})}


# ---------------------------------------------------------------- evaluation


class ImageEvalParams(Params):
    run: str
    n: int | None = None
    seed: int = 1234


def _check_eval_image(p: ImageEvalParams, ctx: CheckContext) -> Claims:
    home = ctx.home
    check_name(p.run, "run", "params.run")
    f = run_dir(home, p.run) / "gencraft.json"
    if not f.is_file():
        raise NotFoundError(f"params.run: run {p.run!r} not found", param="params.run")
    from gencraft.train.curves import IMAGE_KINDS

    if json.loads(f.read_text(encoding="utf-8")).get("kind") not in IMAGE_KINDS:
        raise UsageError(f"params.run: {p.run!r} is not an image run", param="params.run")
    return Claims(reads_run=p.run)


def _run_eval_image(p: ImageEvalParams, ctx: JobContext) -> dict[str, Any]:
    from gencraft.train.image_eval import evaluate_run

    res = evaluate_run(run_dir(ctx.home, p.run), n=p.n, seed=p.seed)
    write_json(run_dir(ctx.home, p.run) / "evaluation.json", res)
    return {"run": p.run, "model": res.get("model"), "floor": res.get("floor")}


# ---------------------------------------------------------------- learn from my ratings (tune)
# gencraft.apps.prefs.tune in a worker: refused at submission without a run or ratings; writes RUN+prefs
# (replaced once the new adapter has trained); its result holds samples before/after for the rated
# prompts (same seeds), which the studio shows side by side.

SAMPLES = 3  # prompts shown before/after


class TuneParams(Params):
    run: str
    kind: str | None = None  # only ratings of this kind of output (ads, write, completion...)
    since: str | None = None  # only ratings of outputs made since this date
    set: dict[str, str | int | float | bool] = {}
    min_pairs: int = 32
    max_time: float | None = None
    seed: int = 0


def prefs_name(run: str) -> str:
    return f"{run}+prefs"


def _library(home: Any) -> Any:
    """The server's library (the worker and the server agree: GENCRAFT_DB, else SQLite under home)."""
    import os

    return Library.open(os.environ.get("GENCRAFT_DB") or f"sqlite:///{home / 'library.db'}")


def _check_tune(p: TuneParams, ctx: CheckContext) -> Claims:
    from gencraft.apps.prefs import rated_items
    from gencraft.train.dpo import collect_pairs

    check_name(p.run, "run", "params.run")
    f = run_dir(ctx.home, p.run) / "gencraft.json"
    if not f.is_file():
        raise NotFoundError(f"params.run: run {p.run!r} not found", param="params.run")
    info = json.loads(f.read_text(encoding="utf-8"))
    if info.get("kind") not in ("gpt", "lstm", "hf") or info.get("adapter"):
        raise UsageError(f"params.run: {p.run!r} is a {info.get('kind')} {'adapter ' if info.get('adapter') else ''}"
                         "run; preference tuning starts from a gpt, lstm or Hugging Face model run", param="params.run")
    if p.max_time is not None and p.max_time <= 0:
        raise UsageError("params.max_time: must be more than 0 seconds", param="params.max_time")
    if p.min_pairs < 0:
        raise UsageError("params.min_pairs: must not be negative", param="params.min_pairs")
    lib = _library(ctx.home)
    try:
        liked, disliked = rated_items(p.kind, p.since, lib)
    finally:
        lib.close()
    where = f" (kind {p.kind})" if p.kind else ""
    collect_pairs(liked, disliked, sample=None, min_pairs=0, where=where)  # none / one kind: refused now
    return Claims(writes_run=prefs_name(p.run), reads_run=p.run)


def _run_tune(p: TuneParams, ctx: JobContext) -> dict[str, Any]:
    from gencraft.apps.prefs import rated_items, tune
    from gencraft.backends import load
    from gencraft.guard import release, watermark_options

    base = run_dir(ctx.home, p.run)
    lib = _library(ctx.home)
    try:
        out = tune(base, kind=p.kind, since=p.since, out=run_dir(ctx.home, prefs_name(p.run)),
                   overrides=[f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in p.set.items()],
                   min_pairs=p.min_pairs, max_time=p.max_time, seed=p.seed, progress=False, library=lib)
        liked, disliked = rated_items(p.kind, p.since, lib)
    finally:
        lib.close()
    info = json.loads((out / "gencraft.json").read_text(encoding="utf-8"))
    prompts = list(dict.fromkeys(i.prompt or "" for i in liked + disliked))[:SAMPLES]
    models = {"before": load(base), "after": load(out)}
    samples = []
    lib = _library(ctx.home)
    # the samples the studio shows leave gencraft like any output: through the release step (guarded,
    # watermarked, signed, stored in the server's library, where they can be rated too)
    with release_policy(library=lib) as policy:
        try:
            for i, prompt in enumerate(prompts):
                opts = dict(max_new_tokens=64, temperature=0.8, seed=p.seed + i)
                sample: dict[str, Any] = {"prompt": prompt}
                for when, tm in models.items():
                    wm = policy.text_watermark(tm.tokenizer.vocab_size)
                    text = tm.generate(prompt, **opts, **watermark_options(wm)).text
                    try:
                        rel = release(text, kind="text", label=f"tune.{when}", policy=policy, model=tm, params=opts,
                                      seed=opts["seed"], prompt=prompt, watermark=wm)
                        sample[when], sample[f"{when}_id"] = rel.text, rel.item_id
                    except GuardError as e:  # the moderation policy refused it: show why, not the text
                        sample[when] = f"[withheld: {e}]"
                samples.append(sample)
        finally:
            lib.close()
    ctx.say(f"{out.name}: {info['metrics'].get('step')} steps, pair loss {info['metrics'].get('best_val_loss')}")
    return {"run": out.name, "metrics": info.get("metrics", {}), "samples": samples}


# ---------------------------------------------------------------- the kits' batch generations
#
# A batch made by a kit's own functions (generate, then release each output through the guard under
# the policy the commands use: watermarked, signed, stored in the library), with the whole batch
# also written as a released file in the job's outputs folder for download.


def _check_text_run(home: Path, name: str) -> None:
    """``params.model`` names a text run the kits can write with (gpt or lstm, not a music run)."""
    check_name(name, "run", "params.model")
    f = run_dir(home, name) / "gencraft.json"
    if not f.is_file():
        raise NotFoundError(f"params.model: run {name!r} not found; GET /v1/gencraft/runs lists them",
                            param="params.model")
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"params.model: run {name!r} has an unreadable gencraft.json ({e})", param="params.model") from None
    kind, tok = info.get("kind"), (info.get("tokenizer") or {}).get("kind")
    if kind not in ("gpt", "lstm") or tok == "music":
        what = "music" if tok == "music" else str(kind)
        raise UsageError(f"params.model: {name!r} is a {what} run; the kits write with a gpt or lstm text run",
                         param="params.model")


def _kit_model(ctx: JobContext, name: str) -> Any:
    return load_model(str(run_dir(ctx.home, name)))


def _policy() -> Any:
    """The release policy of the commands: GENCRAFT_HOME's keys and library (a worker gets the
    server's home, its ``GENCRAFT_DB`` and, from a ``--no-store`` server, ``GENCRAFT_JOB_STORE=0``)."""
    return release_policy(store=os.environ.get("GENCRAFT_JOB_STORE", "1") != "0")


def _slug(text: str, i: int) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40].strip("-")
    return f"{i + 1:02d}-{words or 'piece'}"


class WriteBatchParams(Params):
    model: str
    mode: Literal["draft", "continue"] = "draft"
    titles: list[str] = Field([], max_length=200, description="mode=draft: one piece per title.")
    text: str = Field("", max_length=200_000, description="mode=continue: the draft every variant continues.")
    n: int = Field(1, ge=1, le=200, description="mode=continue: how many continuations (seed, seed+1, ...).")
    kind: Literal["news", "report", "blog", "story"] = "blog"
    sections: int = Field(3, ge=1, le=12)
    section_tokens: int = Field(120, ge=1, le=4096)
    tokens: int = Field(200, ge=1, le=4096, description="mode=continue: most new tokens.")
    memory: str = Field("", max_length=20_000)
    note: str = Field("", max_length=4000)
    note_depth: int = Field(3, ge=0, le=100)
    seed: int = Field(0, ge=0)
    temperature: float = Field(0.8, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    format: Literal["md", "txt"] = "md"


def _check_write_batch(p: WriteBatchParams, ctx: CheckContext) -> Claims:
    _check_text_run(ctx.home, p.model)
    if p.mode == "draft":
        p.titles = [t.strip() for t in p.titles if t.strip()]
        if not p.titles:
            raise UsageError("params.titles: give at least one title (one piece is drafted per title)",
                             param="params.titles")
    elif not p.text.strip():
        raise UsageError("params.text: give the draft to continue (mode=continue)", param="params.text")
    return Claims(reads_run=p.model)


def _run_write_batch(p: WriteBatchParams, ctx: JobContext) -> dict[str, Any]:
    """One piece per title (draft) or ``n`` continuations, each released to ``outputs/NN-title.md``
    (+ manifest) and stored in the library."""
    from gencraft.apps import write as W

    tm = _kit_model(ctx, p.model)
    context = W.Context(memory=p.memory, note=p.note, note_depth=p.note_depth)
    prompts = p.titles if p.mode == "draft" else [p.text] * p.n
    pieces = []
    with _policy() as policy:
        wm = policy.text_watermark(tm.tokenizer.vocab_size, temperature=p.temperature)
        ctx.progress(0, len(prompts), "pieces/s")
        for i, prompt in enumerate(prompts):
            seed = p.seed + i
            if p.mode == "draft":
                written = W.draft(tm, prompt, kind=p.kind, sections=p.sections, section_tokens=p.section_tokens,
                                  ctx=context, seed=seed, temperature=p.temperature, top_p=p.top_p,
                                  markdown=p.format == "md", watermark=wm)
            else:
                written = W.continue_text(tm, prompt, tokens=p.tokens, ctx=context, seed=seed,
                                          temperature=p.temperature, top_p=p.top_p, watermark=wm)
            name = _slug(prompt if p.mode == "draft" else "continuation", i) + "." + p.format
            rel = W.release_written(written, policy=policy, model=tm, model_name=p.model, prompt=prompt, seed=seed,
                                    watermark=wm, out=ctx.out_dir / name, fmt=p.format)
            pieces.append({"file": name, "library_id": rel.item_id, "seed": seed, "chars": len(rel.text),
                           "preview": rel.text[:200]})
            ctx.progress(i + 1, len(prompts), "pieces/s")
    ctx.say(f"{len(pieces)} pieces written to outputs/ and stored in the library")
    return {"pieces": pieces, "files": [x["file"] for x in pieces],
            "library_ids": [x["library_id"] for x in pieces if x["library_id"] is not None]}


class GameBatchParams(Params):
    model: str
    record: Literal["names", "npc", "quest", "item", "dialogue"] = "npc"
    n: int = Field(10, ge=1, le=1000)
    seed: int = Field(0, ge=0)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    prompt: str | None = Field(None, max_length=4000)
    nodes: int = Field(4, ge=2, le=8, description="dialogue: nodes in each tree")
    format: Literal["json", "jsonl", "csv"] = "json"


GAME_CHUNK = 8  # records sampled together: progress (and a cancel) between chunks


def _check_game_batch(p: GameBatchParams, ctx: CheckContext) -> Claims:
    _check_text_run(ctx.home, p.model)
    return Claims(reads_run=p.model)


def _run_game_batch(p: GameBatchParams, ctx: JobContext) -> dict[str, Any]:
    """Records sampled 8 at a time (the records one ``gencraft game KIND -n N --seed S`` gives), each released
    and stored in the library as ``gencraft game`` stores them, then all of them as ``outputs/KIND.FORMAT``."""
    from gencraft.apps import game

    tm = _kit_model(ctx, p.model)
    records, ids = [], []
    params = {"n": p.n, "temperature": p.temperature, "top_p": p.top_p, "job": ctx.job_id,
              "nodes": p.nodes if p.record == "dialogue" else None}
    with _policy() as policy:
        wm = policy.text_watermark(tm.tokenizer.vocab_size, temperature=p.temperature)
        ctx.progress(0, p.n, "records/s")
        for start in range(0, p.n, GAME_CHUNK):
            chunk = game.generate(tm, p.record, n=min(GAME_CHUNK, p.n - start), seed=p.seed, prompt=p.prompt,
                                  temperature=p.temperature, top_p=p.top_p, nodes=p.nodes, watermark=wm,
                                  first_index=start)
            released = game.release_records(chunk, policy=policy, model=tm, model_name=p.model, prompt=p.prompt,
                                            parameters=params, watermark=wm, first_index=start)
            records += chunk
            ids += [r.item_id for r in released if r.item_id is not None]
            ctx.progress(len(records), p.n, "records/s")
        name = f"{p.record}.{p.format}"
        game.export_records(records, ctx.out_dir / name, model=tm, policy=policy, watermark=wm,
                            parameters={**params, "seed": p.seed, "prompt": p.prompt})
    valid = sum(1 for r in records if r.validation and r.validation["valid"])
    ctx.say(f"{len(records)} {p.record} records ({valid} valid) in outputs/{name}, stored in the library")
    return {"records": len(records), "valid": valid, "kind": p.record, "files": [name], "library_ids": ids}


class AdsBatchParams(Params):
    model: str
    product: str = Field(min_length=1, max_length=200)
    features: list[str] = Field([], max_length=20)
    audience: str = Field("", max_length=500)
    tone: str = Field("", max_length=200)
    channel: str = Field("search", max_length=32)
    required: list[str] | None = Field(None, max_length=10)
    banned: list[str] | None = Field(None, max_length=50)
    url: str = Field("", max_length=500)
    campaign: str = Field("", max_length=200)
    n: int = Field(10, ge=1, le=100)
    candidates: int | None = Field(None, ge=1, le=1000)
    seed: int = Field(0, ge=0)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    rank_by_ratings: bool = True


def _brief(p: AdsBatchParams) -> Any:
    from gencraft.apps.ads import Brief

    fields = p.model_dump(include={"product", "features", "audience", "tone", "channel", "required", "url", "campaign"})
    brief = Brief(**fields)
    if p.banned is not None:
        brief.banned = list(dict.fromkeys([*brief.banned, *p.banned]))
    return brief


def _check_ads_batch(p: AdsBatchParams, ctx: CheckContext) -> Claims:
    from gencraft.apps.ads import channel_table

    _check_text_run(ctx.home, p.model)
    if p.channel not in channel_table():
        raise UsageError(f"params.channel: {p.channel!r} is not a channel; expected one of "
                         f"{', '.join(channel_table())}", param="params.channel")
    if p.candidates is not None and p.candidates < p.n:
        raise UsageError(f"params.candidates: {p.candidates} is fewer than n={p.n}", param="params.candidates")
    return Claims(reads_run=p.model)


def _run_ads_batch(p: AdsBatchParams, ctx: JobContext) -> dict[str, Any]:
    """Ranked variants as ``gencraft ads`` makes them (toward the ads rated up in the library unless
    ``rank_by_ratings`` is off), each released and stored, and the ad platform's CSV in ``outputs/``."""
    from gencraft.apps import ads

    tm = _kit_model(ctx, p.model)
    brief = _brief(p)
    k = p.candidates or 3 * p.n
    params = {"channel": p.channel, "product": p.product, "n": p.n, "candidates": k, "seed": p.seed,
              "temperature": p.temperature, "job": ctx.job_id}
    with _policy() as policy:
        wm = policy.text_watermark(tm.tokenizer.vocab_size, temperature=p.temperature)
        ctx.progress(0, p.n, "variants/s")
        ctx.say(f"sampling {k} candidates for {p.n} {p.channel} ads")
        variants = ads.generate(tm, brief, n=p.n, seed=p.seed, candidates=k, temperature=p.temperature,
                                top_p=p.top_p, rank_by_ratings=p.rank_by_ratings, watermark=wm)
        released = ads.release_variants(variants, brief, policy=policy, model=tm, model_name=p.model,
                                        parameters=params, seed=p.seed, watermark=wm)
        ctx.progress(len(variants), p.n, "variants/s")
        ads.export_csv(variants, ctx.out_dir / "ads.csv", brief, model=tm, seed=p.seed, policy=policy, watermark=wm)
    ctx.say(f"{len(variants)} ranked {p.channel} ads in outputs/ads.csv, stored in the library")
    return {"variants": [v.to_dict() for v in variants], "files": ["ads.csv"],
            "library_ids": [r.item_id for r in released if r.item_id is not None]}


# ---------------------------------------------------------------- the table

KINDS: dict[str, JobKind] = {k.name: k for k in [
    JobKind("data.text", "prepare a text dataset from uploaded files", TextDataParams, "work",
            _check_text_data, _run_text_data),
    JobKind("data.images", "prepare an image dataset from uploaded pictures or sklearn:digits", ImageDataParams,
            "work", _check_image_data, _run_image_data),
    JobKind("data.music", "prepare a music dataset from uploaded MIDI/MusicXML/ABC or music21:bach",
            MusicDataParams, "work", _check_music_data, _run_music_data),
    JobKind("data.speech", "prepare a speech dataset (a voice) from uploaded recordings and transcripts",
            SpeechDataParams, "work", _check_speech_data, _run_speech_data),
    JobKind("train", "train a text model (gpt, lstm, text_vae; music datasets too) or a voice (tts on a speech "
            "dataset)", TrainParams, "train",
            _check_train, _run_train, stops_gracefully=True),
    JobKind("train.image", "train an image model (vae, dcgan, stylegan)", ImageTrainParams, "train",
            _check_train_image, _run_train_image, stops_gracefully=True),
    JobKind("evaluate.image", "FID-proxy evaluation of an image run", ImageEvalParams, "train",
            _check_eval_image, _run_eval_image),
    JobKind("tune", "learn from my ratings: a preference (DPO) adapter RUN+prefs from the library's ratings",
            TuneParams, "train", _check_tune, _run_tune, stops_gracefully=True),
    JobKind("kits.write", "a batch of drafts (one per title) or continuations, into the library and outputs/",
            WriteBatchParams, "work", _check_write_batch, _run_write_batch, stops_gracefully=True),
    JobKind("kits.game", "a batch of game records (names, npc, quest, item, dialogue) into the library and "
            "outputs/", GameBatchParams, "work", _check_game_batch, _run_game_batch, stops_gracefully=True),
    JobKind("kits.ads", "a batch of ranked ad variants for a brief, into the library and outputs/ads.csv",
            AdsBatchParams, "work", _check_ads_batch, _run_ads_batch, stops_gracefully=True),
]}


def kind_of(name: Any) -> JobKind:
    if not isinstance(name, str) or name not in KINDS:
        raise UsageError(f"kind: {name!r} is not a job kind; expected one of {', '.join(KINDS)}", param="kind")
    return KINDS[name]


__all__ = ["KINDS", "CheckContext", "Claims", "JobContext", "JobKind", "Params", "dataset_manifest", "kind_of", "parse_params"]

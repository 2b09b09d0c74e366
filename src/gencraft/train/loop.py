"""The training loop for text models (GPT and LSTM): ``gencraft.train(dataset, ...)``.

One loop, read top to bottom: resolve configs -> set up device, threads, seeds, processes ->
build model and optimizer (or restore them from ``checkpoints/last``) -> step: random windows,
forward under autocast, backward with gradient accumulation, clip, AdamW -> every
``eval_interval`` steps: validation loss, best weights, checkpoint, early stopping -> write the
run directory (docs/architecture.md).
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from gencraft import __version__
from gencraft.config import apply_overrides, check_value, from_dict
from gencraft.errors import ConfigError, DataError, TrainingDiverged, UsageError
from gencraft.io import now_iso, write_text
from gencraft.models import config_class
from gencraft.models.hf import transformers_config
from gencraft.paths import run_path
from gencraft.runs import new_run_id, sha256_file, write_info
from gencraft.train import dist as D
from gencraft.train import finetune
from gencraft.train.autosave import Autosave
from gencraft.train.card import model_card
from gencraft.train.checkpoint import CHECKPOINT, load_checkpoint, read_checkpoint_state, save_checkpoint
from gencraft.train.common import (
    Progress,
    check_training_memory,
    copy_dataset_files,
    dataset_record,
    diverged_error,
    pick_device,
    refuse_existing_run,
    seed_all,
    use_bf16,
)
from gencraft.train.config import TrainConfig, check, check_model, resolve
from gencraft.train.curves import pictures_markdown
from gencraft.train.data import Dataset, check_split, get_batch, load_dataset
from gencraft.train.metrics import RunLog, load_run_tokenizer, text_samples
from gencraft.train.optim import lr_at, make_optimizer
from gencraft.train.rows import RowThreads, row_threads
from gencraft.train.speech import train_speech
from gencraft.train.text_vae import train_text_vae


def estimate_val_loss(model: torch.nn.Module, ds: Dataset, tc: TrainConfig, block_size: int,
                      device: torch.device, amp: Callable[[], Any], info: D.DistInfo,
                      threads: RowThreads | None = None) -> float:
    """Mean loss over ``eval_iters`` random validation windows, the same windows at every evaluation.

    A fresh generator with a fixed seed picks them (so evaluations compare like with like and the
    training data stream is untouched); under torchrun the batches are shared out between ranks,
    with row threads between the threads (``amp()``: a fresh autocast context).
    """
    gen = torch.Generator().manual_seed(tc.seed + 1)
    batches = [get_batch(ds.val, tc.batch_size, block_size, gen, device) for _ in range(tc.eval_iters)]
    mine = batches[info.rank::info.world_size]
    n = threads.n if threads is not None else 1

    @torch.no_grad()
    def losses(part: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        total = torch.zeros((), device=device)
        for x, y in part:
            with amp():
                total += model(x, y)[1].float()
        return total

    was_training = model.training
    model.eval()
    parts = [(mine[k::n],) for k in range(n) if mine[k::n]]
    total = functools.reduce(torch.add, (threads or RowThreads(1)).map(losses, parts)) if parts \
        else torch.zeros((), device=device)
    if info.enabled:
        torch.distributed.all_reduce(total)
    model.train(was_training)
    return float(total.item()) / tc.eval_iters


def _resolve_configs(ds: Dataset, run_dir: Path, model: str, preset: str, overrides, resume: bool):
    """Fresh run: preset + overrides. Resume: the checkpoint's configs + overrides (training fields only)."""
    if not resume:
        mcfg, tcfg = resolve(model, preset, ds.vocab_size, overrides)
        return model, preset, mcfg, tcfg, {}
    state = read_checkpoint_state(run_dir)
    kind = state["kind"]
    mcfg0 = from_dict(config_class(kind), state["model"])
    tcfg0 = from_dict(TrainConfig, state["train"])
    mcfg, tcfg = apply_overrides([mcfg0, tcfg0], overrides)
    if asdict(mcfg) != asdict(mcfg0):
        changed = [k for k in asdict(mcfg) if asdict(mcfg)[k] != asdict(mcfg0)[k]]
        raise ConfigError(f"--set {changed[0]}: the model shape cannot change on --resume; "
                          "start a new run with another --out", param=changed[0])
    check(tcfg)
    digest = ds.manifest.get("digest", "")
    if state.get("manifest_digest") and digest != state["manifest_digest"]:
        raise UsageError(f"{ds.path}: not the dataset this run was trained on (manifest digest differs); "
                         "resume with the original dataset", param="dataset")
    return kind, state.get("preset", preset), mcfg, tcfg, state


def train(
    dataset: str | os.PathLike[str],
    *,
    model: str | None = None,
    preset: str = "tiny",
    out: str | os.PathLike[str] | None = None,
    overrides: list[str] | dict[str, str] | None = None,
    resume: bool = False,
    max_time: float | None = None,
    seed: int | None = None,
    device: str | None = None,
    progress: bool = True,
    part: str | None = None,
    base: str | os.PathLike[str] | None = None,
    lora: bool = False,
    objective: str = "lm",
) -> Path:
    """Train a ``gpt`` or ``lstm`` language model on a prepared dataset; returns the run directory.

    ``overrides`` are ``key=value`` strings for any model or training field (``n_layer=4``,
    ``learning_rate=1e-3``...). ``resume`` continues ``out`` exactly from its last checkpoint.
    ``max_time`` is the run's wall-clock budget in seconds (resumes included): training stops
    cleanly when it is spent and the learning-rate schedule is stretched to end with it.
    ``base`` (a run or ``hf:PATH``) starts from that model's weights (fine-tuning defaults, the
    base's shape and family); ``lora`` trains LoRA adapters on it instead of every weight
    (:mod:`gencraft.train.finetune`); ``objective="dpo"`` trains them on a preference dataset
    (:mod:`gencraft.train.dpo`). Under ``torchrun`` every process calls this; rank 0 writes
    the run directory.
    """
    if (base is not None or lora) and model in ("text_vae", "tts"):
        raise UsageError("--from/--lora: fine-tuning starts from a gpt, lstm or Hugging Face language model, "
                         f"not a {model}", param="from")
    if model == "tts":  # a voice: acoustic model + vocoder on a speech dataset (``part``: one of them)
        return train_speech(dataset, preset=preset, part=part, out=out, overrides=overrides, resume=resume,
                            max_time=max_time, seed=seed, device=device, progress=progress)
    if part is not None:
        raise UsageError(f"--part {part}: only --model tts has parts", param="part")
    if model == "text_vae":  # sentence VAE: batches of whole documents, its own loop
        return train_text_vae(dataset, preset=preset, out=out, overrides=overrides, resume=resume,
                              max_time=max_time, seed=seed, device=device, progress=progress)
    ds = load_dataset(dataset)
    tune = None
    if (base is not None or lora) and not resume:
        tune, mcfg, tc = finetune.plan(ds.path, ds.vocab_size, None if base is None else os.fspath(base),
                                       lora=lora, model=model, overrides=overrides, objective=objective)
        model = tune.kind
    model = model or "gpt"
    run_dir = run_path(out) if out is not None else run_path(f"{ds.path.name}-{model}{'-lora' if lora else ''}")
    if not resume and D.elastic_job() and (run_dir / CHECKPOINT / "state.json").is_file():
        # torchrun restarted this job's processes after a failure: go on from its last checkpoint
        resume = read_checkpoint_state(run_dir).get("elastic_job") == D.elastic_job()
    refuse_existing_run(run_dir, resume)
    if tune is not None and not resume:  # (an elastic restart resumes its checkpoint instead)
        kind, preset, state = tune.kind, "finetune", {}
    else:
        kind, preset, mcfg, tc, state = _resolve_configs(ds, run_dir, model, preset, overrides, resume)
        tune = finetune.from_state(state.get("finetune"))
    if max_time is not None:
        tc.max_time = check_value("--max-time", max_time, TrainConfig.LIMITS["max_time"])
    if seed is not None:
        tc.seed = int(seed)
    if device is not None:
        tc.device = device
    check(tc)
    check_model(kind, mcfg)
    if kind == "hf":  # a Hugging Face base: its shape is its config.json's
        try:
            hc = transformers_config(mcfg.hf_config)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"the base's config.json is not a config transformers knows ({e})", param="from") from None
        width, depth = int(getattr(hc, "hidden_size", 0) or 0), int(getattr(hc, "num_hidden_layers", 1) or 1)
    else:
        width, depth = max(mcfg.n_embd, getattr(mcfg, "n_hidden", 0)), mcfg.n_layer
    check_training_memory(kind, mcfg, batch=tc.batch_size, positions=mcfg.block_size, width=width, depth=depth,
                          vocab=mcfg.vocab_size, frozen=tune is not None and tune.lora is not None)
    if mcfg.vocab_size < ds.vocab_size:
        raise ConfigError(f"--set vocab_size={mcfg.vocab_size}: smaller than the dataset's tokenizer "
                          f"({ds.vocab_size}); leave it unset", param="vocab_size")
    T = mcfg.block_size
    check_split(ds.train, T, "train", ds.path)
    check_split(ds.val, T, "val", ds.path)

    dev = pick_device(tc.device)
    info = D.setup(dev.type)
    if dev.type == "cuda" and info.enabled:
        dev = torch.device("cuda", info.local_rank)
    threads = torch.get_num_threads()
    finished = False
    try:
        rows = 1
        if dev.type == "cpu":
            n = tc.num_threads or max(1, (os.cpu_count() or 1) // info.local_world_size)
            rows = row_threads(tc.parallel, n, kind=kind, batch_size=tc.batch_size, dropout=getattr(mcfg, "dropout", 0.0),
                               compile=tc.compile, distributed=info.enabled, objective=tune.objective if tune else "lm")
            torch.set_num_threads(1 if rows > 1 else n)
        out = _train(ds, run_dir, kind, preset, mcfg, tc, state, dev, info, progress, tune, rows)
        finished = True
        return out
    finally:
        torch.set_num_threads(threads)  # a library call leaves the process as it found it
        D.teardown(info, finished)


def _train(ds: Dataset, run_dir: Path, kind: str, preset: str, mcfg, tc: TrainConfig, state: dict,
           dev: torch.device, info: D.DistInfo, show_progress: bool, tune: finetune.Tune | None = None,
           rows: int = 1) -> Path:
    main = info.is_main
    seed_all(tc.seed + info.rank)  # dropout masks differ between ranks; the data stream does not
    gen = torch.Generator().manual_seed(tc.seed)  # the training data stream (identical on every rank)
    # an adapter's checkpoint holds only the adapter: its base is read again (and checked) on --resume
    adapter_only = tune is not None and tune.lora is not None
    raw = finetune.build_model(kind, mcfg, tune, fresh=not state or adapter_only,
                               resume=run_dir if state else None).to(dev)
    opt = make_optimizer(raw, tc, dev.type)
    if state:
        load_checkpoint(run_dir, raw, opt, gen, state)
        for g, wd in zip(opt.param_groups, (tc.weight_decay, 0.0), strict=True):  # overrides win
            g["weight_decay"], g["betas"] = wd, (tc.beta1, tc.beta2)
        if info.rank:
            torch.manual_seed(tc.seed + info.rank + state["step"])
    fwd: torch.nn.Module = torch.compile(raw) if tc.compile else raw  # what evaluation runs
    net = DDP(fwd, device_ids=[dev.index] if dev.type == "cuda" else None) if info.enabled else fwd
    bf16 = use_bf16(tc, dev, kind)

    def amp() -> Any:  # a fresh context each time: the row threads enter it side by side
        return torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with amp():
            return net(x, y)[1]

    trainable = [p for p in raw.parameters() if p.requires_grad]

    run_id = D.broadcast_str(state.get("run_id") or new_run_id(), info, dev)
    created = state.get("created") or now_iso()
    if main:
        copy_dataset_files(run_dir, ds, finetune.base_tokens_seen(tune, ds.vocab_size))
        finetune.prepare_run_dir(run_dir, tune)
    step: int = state.get("step", 0)
    best: float = state.get("best_val_loss", math.inf)
    bad_evals: int = state.get("bad_evals", 0)
    tokens_seen: int = state.get("tokens_seen", 0)
    time_before: float = state.get("train_time_s", 0.0)
    model_digest: str = state.get("model_digest", "")
    last_val: dict[str, float] = state.get("last_val", {})
    B, T, A = tc.batch_size, mcfg.block_size, tc.grad_accum
    tokens_per_step = B * T * A * info.world_size
    train_part = D.rank_part(ds.train, info)  # this rank's own tokens
    if len(train_part) < T + 2:
        raise DataError(f"{ds.path}: the train split ({len(ds.train):,} tokens) cut {info.world_size} ways leaves "
                        f"rank {info.rank} {len(train_part):,}, too few for block_size {T}; use fewer processes "
                        "or a smaller --set block_size", param="block_size")
    ck_interval = tc.checkpoint_interval or tc.eval_interval
    diverge_at = 10 * max(math.log(mcfg.vocab_size), 1.0)  # a loss no model worse than guessing reaches
    record = {
        "kind": kind, "preset": preset, "run_id": run_id, "created": created, "name": run_dir.name,
        "model": asdict(mcfg), "train": asdict(tc),
        "tokenizer": {k: ds.manifest["tokenizer"].get(k) for k in ("kind", "vocab_size", "eos_id")},
        "data": dataset_record(ds), **finetune.record(tune),
    }

    def summary(stopped: str | None = None) -> dict[str, Any]:
        finite = math.isfinite(best)
        m = {"best_val_loss": best if finite else None, "val_ppl": math.exp(min(best, 700.0)) if finite else None,
             "val_bpc": ds.bpc(best) if finite and math.isfinite(ds.bpc(best)) else None,
             "step": step, "tokens_seen": tokens_seen,
             "train_time_s": round(time_before + (time.time() - t_start), 2), "bf16": bf16}
        if stopped:
            m["stopped"] = stopped
        return m

    def write_run_info(stopped: str | None = None) -> None:
        full = {**record, "metrics": summary(stopped), "model_digest": model_digest}
        write_info(run_dir, full)
        write_text(run_dir / "MODEL_CARD.md", model_card({**full, "gencraft_version": __version__})
                   + pictures_markdown(run_dir))

    def checkpoint() -> None:
        save_checkpoint(run_dir, raw, opt, gen, {
            "kind": kind, "preset": preset, "run_id": run_id, "created": created,
            "model": asdict(mcfg), "train": asdict(tc), "manifest_digest": ds.manifest.get("digest", ""),
            "step": step, "best_val_loss": best, "bad_evals": bad_evals, "tokens_seen": tokens_seen,
            "train_time_s": time_before + (time.time() - t_start), "model_digest": model_digest,
            "last_val": last_val, "elastic_job": D.elastic_job(), "finetune": tune.state() if tune else None,
        }, trainable_only=adapter_only)

    def diverged(where: str) -> TrainingDiverged:
        return diverged_error(run_dir, step, where)

    bar = Progress(show_progress and main, tc.max_iters, step)
    autosave = Autosave(run_dir, every_s=tc.checkpoint_every, every_steps=ck_interval, step=step, log=bar.log,
                        enabled=main)
    runlog = RunLog(run_dir, total=tc.max_iters, start_step=step, max_time=tc.max_time, time_before=time_before,
                    enabled=main)
    sample_tok = load_run_tokenizer(ds.path) if main else None
    t_start = time.time()
    t_log, tokens_log = t_start, tokens_seen
    loss_sum = torch.zeros((), device=dev)  # summed on the device; read only every log_interval steps
    loss_n = 0
    stopped = None
    net.train()
    autosave.start()
    threads = RowThreads(rows)
    try:
        while step < tc.max_iters:
            elapsed = time_before + (time.time() - t_start)
            lr = lr_at(step, tc, elapsed / tc.max_time if tc.max_time else 0.0)
            for g in opt.param_groups:
                g["lr"] = lr
            for micro in range(A):
                x, y = get_batch(train_part, B, T, gen, dev)
                if threads.n > 1:  # the rows shared out between threads, one core each (gencraft.train.rows)
                    loss = threads.grads(loss_of, x, y, trainable, 1.0 / A)
                else:
                    with nullcontext() if (not info.enabled or micro == A - 1) else net.no_sync():
                        loss = loss_of(x, y)
                        (loss / A).backward()
                    loss = loss.detach().float()
                loss_sum += loss
                loss_n += 1
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(raw.parameters(), tc.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += tokens_per_step

            if step % tc.log_interval == 0 or step == tc.max_iters:
                train_loss = float(loss_sum.item()) / max(loss_n, 1)
                loss_sum.zero_()
                loss_n = 0
                if not math.isfinite(train_loss) or train_loss > diverge_at:
                    raise diverged(f"the training loss ({train_loss:.4g}) is NaN/inf or over {diverge_at:.3g}, "
                                   "ten times a uniform guess's")
                now = time.time()
                tps = (tokens_seen - tokens_log) / max(now - t_log, 1e-9)
                t_log, tokens_log = now, tokens_seen
                bar.update(step, train_loss, tps)
                runlog.log({"step": step, "split": "train", "loss": round(train_loss, 5), "lr": lr,
                            "tokens_per_s": round(tps, 1), "time_s": round(time_before + now - t_start, 2)})

            out_of_time = bool(tc.max_time) and time_before + (time.time() - t_start) >= tc.max_time
            halt = D.any_true(out_of_time or autosave.stopping, info, dev)  # all ranks stop together
            out_of_time = halt and not autosave.stopping
            if autosave.stopping and stopped is None:
                stopped = f"{autosave.signal_name}: stopped at step {step}"
            last = step == tc.max_iters or out_of_time
            if step % tc.eval_interval == 0 or last:
                val = estimate_val_loss(fwd, ds, tc, T, dev, amp, info, threads)
                if not math.isfinite(val):
                    raise diverged("the validation loss is NaN/inf")
                last_val = {"loss": val, "step": step}
                improved = val < best
                if improved:
                    best, bad_evals = val, 0
                    if main:
                        model_digest = finetune.save_best(raw, run_dir, tune)
                else:
                    bad_evals += 1
                runlog.log({"step": step, "split": "val", "loss": round(val, 5), "ppl": round(math.exp(min(val, 700.0)), 4),
                            "bpc": round(ds.bpc(val), 5), "best": round(best, 5),
                            "time_s": round(time_before + time.time() - t_start, 2)})
                if main:
                    if sample_tok is not None:
                        runlog.text_samples(step, text_samples(raw, sample_tok), music=sample_tok.kind == "music")
                    bar.log(f"step {step}: val loss {val:.4f}, ppl {math.exp(min(val, 700.0)):.2f}, "
                            f"bpc {ds.bpc(val):.3f}{' (best)' if improved else ''}")
                    if improved:
                        write_run_info()
                if tc.patience and bad_evals >= tc.patience:
                    stopped = f"early stopping: {bad_evals} evaluations without improvement"
            if out_of_time and stopped is None:
                stopped = f"max_time: {tc.max_time:g} s budget spent"
            if main and (autosave.due(step) or last or stopped):
                if not all(torch.isfinite(p).all() for p in raw.parameters()):
                    raise diverged("a weight is NaN/inf")
                checkpoint()
                autosave.saved(step)
            if stopped:
                break
    finally:
        threads.close()
        autosave.close()
        bar.close()
        runlog.close()
    if main:
        if stopped:
            bar.log(stopped)
        if not (tune and tune.lora) and (run_dir / "model.safetensors").is_file():  # the file's own digest: a resumed run's checkpoint
            model_digest = sha256_file(run_dir / "model.safetensors")  # may predate the best weights saved after it
        if model_digest:  # no evaluated weights yet (stopped early): no gencraft.json, the mark says why
            write_run_info(stopped)
    autosave.finish(step)  # after a signal: raises Interrupted (the CLI exits 130)
    return run_dir

"""Training loop of the text VAE (``gencraft train DATASET --model text_vae``).

Sentences are the dataset's documents (one per line of a line-per-document corpus): the token
stream of ``train.bin``/``val.bin`` is cut at each end-of-text token, and each sentence keeps its
end token (cut to ``block_size`` tokens). A step draws ``batch_size`` random sentences, pads them,
and minimizes

    loss = (reconstruction + beta * sum_d max(KL_d, free_bits)) / tokens

where ``KL_d`` is the batch's KL on latent dimension ``d`` and ``beta`` follows the annealing
schedule (:func:`kl_weight`): ``linear`` (0 -> 1 over ``kl_anneal_iters``, Bowman et al. 2016),
``cyclical`` (Fu et al. 2019: ``kl_cycles`` ramps, each rising over ``kl_ratio`` of its cycle) or
``none`` (beta = 1 from the start — the setting that collapses the posterior).

Evaluation runs over a fixed set of validation sentences and reports, per token: reconstruction
loss, KL, the negative ELBO (their sum: an upper bound on the model's cross-entropy, comparable
with a language model's validation loss) and the number of active latent units (Burda et al.,
2016: dimensions whose posterior mean varies across sentences, Cov > 0.01). The best weights are
those with the lowest negative ELBO.

Everything else is the text pipeline's: ``TrainConfig`` and its presets' fields (learning rate,
warmup + cosine schedule, ``max_iters``, ``eval_interval``, ``patience``, ``max_time``, ``seed``),
the AdamW set-up, the resumable ``checkpoints/last`` and the run directory files.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from gencraft import __version__
from gencraft.config import Limit, Range, apply_overrides, check_value, from_dict, validate
from gencraft.errors import ConfigError, DataError, RunError, UsageError
from gencraft.generate.latent import decode_latents
from gencraft.io import now_iso, write_text
from gencraft.models.text_vae import PRESETS, TextVAE, TextVAEConfig
from gencraft.paths import run_path
from gencraft.runs import (
    load_run_weights,
    new_run_id,
    read_info,
    run_model_config,
    save_weights,
    sha256_file,
    write_info,
)
from gencraft.train.autosave import Autosave
from gencraft.train.card import model_card
from gencraft.train.checkpoint import load_checkpoint, read_checkpoint_state, save_checkpoint
from gencraft.train.common import (
    Progress,
    check_training_memory,
    copy_dataset_files,
    dataset_record,
    diverged_error,
    pick_device,
    refuse_existing_run,
    seed_all,
)
from gencraft.train.config import TrainConfig
from gencraft.train.curves import pictures_markdown
from gencraft.train.data import load_dataset
from gencraft.train.metrics import RunLog, load_run_tokenizer
from gencraft.train.optim import lr_at, make_optimizer

KIND = "text_vae"


@dataclass
class KLConfig:
    # defaults: the setting that kept the latent in use in bench/text_vae.py (bench/RESULTS.md)
    kl_anneal: str = "cyclical"  # linear | cyclical | none
    kl_anneal_iters: int = 0  # steps of the linear ramp from 0 to 1; 0 = max_iters (the whole run)
    kl_cycles: int = 3  # cyclical: number of cycles over max_iters
    kl_ratio: float = 0.5  # cyclical: share of each cycle spent rising (then beta = 1)
    free_bits: float = 0.1  # nats per latent dimension the KL term does not penalize (0 = off)

    LIMITS: ClassVar[dict[str, Limit]] = {
        "kl_anneal": ("linear", "cyclical", "none"), "kl_anneal_iters": Range(0, 10**9),
        "kl_cycles": Range(1, 10**6), "kl_ratio": Range(0, 1, lo_open=True), "free_bits": Range(0, 100)}


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(batch_size=32, learning_rate=3e-3, min_lr=3e-4, warmup_iters=20, max_iters=600,
                 eval_interval=100, eval_iters=8, weight_decay=0.0),
    "small": dict(batch_size=64, learning_rate=2e-3, min_lr=1e-4, warmup_iters=50, max_iters=3000,
                  eval_interval=250, eval_iters=16, weight_decay=0.0),
    "base": dict(batch_size=64, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=6000,
                 eval_interval=500, eval_iters=32, weight_decay=0.0),
}


def kl_weight(step: int, kc: KLConfig, max_iters: int, time_fraction: float = 0.0) -> float:
    """beta at optimizer step ``step`` (see the module docstring).

    Like the learning-rate schedule, a wall-clock budget drives it too: ``time_fraction``
    (elapsed / max_time) counts as ``time_fraction * max_iters`` steps when that is further along,
    so a run stopped by ``--max-time`` still goes through its whole KL schedule.
    """
    if kc.kl_anneal == "none":
        return 1.0
    step = max(float(step), time_fraction * max_iters)
    if kc.kl_anneal == "linear":
        ramp = kc.kl_anneal_iters or max(max_iters, 1)
        return min(1.0, step / ramp)
    period = max(max_iters / max(kc.kl_cycles, 1), 1.0)
    tau = (step % period) / period
    return min(1.0, tau / max(kc.kl_ratio, 1e-9))


def check_configs(mcfg: TextVAEConfig, tc: TrainConfig, kc: KLConfig) -> None:
    """Every field against its type and range (the configs' LIMITS), naming the first bad one."""
    for c in (mcfg, tc, kc):
        validate(c)
    if mcfg.eos_id >= mcfg.vocab_size:
        raise ConfigError(f"--set eos_id={mcfg.eos_id}: must be below vocab_size ({mcfg.vocab_size})", param="eos_id")


def resolve(preset: str, vocab_size: int, eos_id: int, overrides=None) -> tuple[TextVAEConfig, TrainConfig, KLConfig]:
    """Model, training and KL configs for ``preset`` with ``key=value`` overrides applied."""
    if preset not in PRESETS:
        raise UsageError(f"--preset {preset}: unknown preset; expected one of {', '.join(PRESETS)}", param="preset")
    mcfg = TextVAEConfig(vocab_size=vocab_size, eos_id=eos_id, **PRESETS[preset])
    tc = TrainConfig(**TRAIN_PRESETS[preset])
    mcfg, tc, kc = apply_overrides([mcfg, tc, KLConfig()], overrides)
    return mcfg, tc, kc


# ---- sentences ----

def sentences(tokens: np.ndarray, eos_id: int, max_len: int) -> list[np.ndarray]:
    """Cut a token stream at its end-of-text tokens: sentences ending with ``eos_id``, at most ``max_len`` long."""
    arr = np.asarray(tokens, dtype=np.int64)
    ends = np.flatnonzero(arr == eos_id)
    out, start = [], 0
    for e in ends:
        if e > start:
            s = arr[start:e][: max_len - 1]
            out.append(np.append(s, eos_id))
        start = e + 1
    if start < len(arr):
        out.append(np.append(arr[start:][: max_len - 1], eos_id))
    return out


def pad_batch(sents: list[np.ndarray], eos_id: int, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` ``[B, T]`` (padded with ``eos_id``) and ``lengths`` ``[B]``."""
    T = max(len(s) for s in sents)
    x = np.full((len(sents), T), eos_id, dtype=np.int64)
    for i, s in enumerate(sents):
        x[i, :len(s)] = s
    return torch.from_numpy(x).to(device), torch.tensor([len(s) for s in sents], device=device)


# ---- evaluation ----

@torch.no_grad()
def evaluate(model: TextVAE, sents: list[np.ndarray], batch_size: int, device: torch.device,
             seed: int = 0) -> dict[str, float]:
    """Reconstruction, KL and negative ELBO per token, per sentence, and active units on ``sents``."""
    was = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    recon = kl = 0.0
    tokens = 0
    mus = []
    for i in range(0, len(sents), batch_size):
        x, lengths = pad_batch(sents[i:i + batch_size], model.config.eos_id, device)
        out = model(x, lengths, sample=True, generator=gen)
        recon += float(out["recon"])
        kl += float(out["kl"].sum())
        tokens += int(out["tokens"])
        mus.append(out["mu"].float().cpu())
    model.train(was)
    mu = torch.cat(mus)
    active = int((mu.var(0, unbiased=False) > 0.01).sum()) if model.config.variational and len(mu) > 1 else 0
    n = max(len(sents), 1)
    return {"recon": recon / tokens, "kl": kl / tokens, "nelbo": (recon + kl) / tokens,
            "nelbo_sentence": (recon + kl) / n, "kl_sentence": kl / n, "active_units": active,
            "sentences": len(sents), "tokens": tokens}


# ---- the loop ----

def train_text_vae(
    dataset: str | os.PathLike[str],
    *,
    model: str = KIND,
    preset: str = "tiny",
    out: str | os.PathLike[str] | None = None,
    overrides: list[str] | dict[str, str] | None = None,
    resume: bool = False,
    max_time: float | None = None,
    seed: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Train a text VAE on a prepared line-per-document dataset; returns the run directory.

    Same arguments as :func:`gencraft.train.loop.train`. Overrides reach the model
    (``n_latent=32``, ``word_dropout=0.3``, ``variational=false``), the training config and the KL
    schedule (``kl_anneal=cyclical``, ``free_bits=0.1``...).
    """
    ds = load_dataset(dataset)
    tok = ds.manifest["tokenizer"]
    run_dir = run_path(out) if out is not None else run_path(f"{ds.path.name}-{KIND}")
    refuse_existing_run(run_dir, resume)
    state: dict[str, Any] = {}
    if resume:
        state = read_checkpoint_state(run_dir)
        if state.get("kind") != KIND:
            raise RunError(f"{run_dir}: not a text_vae run; resume it with its own --model", param="model")
        m0 = from_dict(TextVAEConfig, state["model"])
        mcfg, tc, kc = apply_overrides([m0, from_dict(TrainConfig, state["train"]),
                                        from_dict(KLConfig, state.get("kl", {}))], overrides)
        if asdict(mcfg) != asdict(m0):
            raise ConfigError("the model shape cannot change on --resume; start a new run with another --out")
        preset = state.get("preset", preset)
    else:
        mcfg, tc, kc = resolve(preset, int(tok["vocab_size"]), int(tok.get("eos_id", 0)), overrides)
    if max_time is not None:
        tc.max_time = check_value("--max-time", max_time, TrainConfig.LIMITS["max_time"])
    if seed is not None:
        tc.seed = int(seed)
    if device is not None:
        tc.device = device
    check_configs(mcfg, tc, kc)
    check_training_memory(KIND, mcfg, batch=tc.batch_size, positions=mcfg.block_size,
                          width=max(mcfg.n_embd, mcfg.n_hidden), depth=mcfg.n_layer + 1, vocab=mcfg.vocab_size)
    if mcfg.vocab_size < int(tok["vocab_size"]):
        raise ConfigError(f"--set vocab_size={mcfg.vocab_size}: smaller than the dataset's tokenizer", param="vocab_size")
    train_s = sentences(ds.train, mcfg.eos_id, mcfg.block_size)
    val_s = sentences(ds.val, mcfg.eos_id, mcfg.block_size)
    if not train_s or not val_s:
        raise DataError(f"{ds.path}: the text VAE needs sentences in both train.bin and val.bin "
                        "(prepare a line-per-document corpus with a validation split)")
    val_s = val_s[: tc.eval_iters * tc.batch_size]

    dev = pick_device(tc.device)
    if dev.type == "cpu":
        torch.set_num_threads(tc.num_threads or max(1, os.cpu_count() or 1))
    seed_all(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)  # which sentences each step draws
    net = TextVAE(mcfg).to(dev)
    opt = make_optimizer(net, tc, dev.type)
    if state:
        load_checkpoint(run_dir, net, opt, gen, state)

    run_id = state.get("run_id") or new_run_id()
    created = state.get("created") or now_iso()
    copy_dataset_files(run_dir, ds)
    step: int = state.get("step", 0)
    best: float = state.get("best_val_loss", math.inf)
    best_metrics: dict[str, Any] = state.get("best_metrics", {})
    bad_evals: int = state.get("bad_evals", 0)
    tokens_seen: int = state.get("tokens_seen", 0)
    time_before: float = state.get("train_time_s", 0.0)
    model_digest: str = state.get("model_digest", "")
    record = {"kind": KIND, "preset": preset, "run_id": run_id, "created": created, "name": run_dir.name,
              "model": asdict(mcfg), "train": asdict(tc), "kl": asdict(kc),
              "tokenizer": {k: tok.get(k) for k in ("kind", "vocab_size", "eos_id")}, "data": dataset_record(ds)}
    t_start = time.time()

    def summary(stopped: str | None = None) -> dict[str, Any]:
        m = {"best_val_loss": best, "val_ppl": math.exp(best) if best < 50 else math.inf, "val_bpc": ds.bpc(best),
             **{f"val_{k}": v for k, v in best_metrics.items() if k in ("recon", "kl", "nelbo", "active_units")},
             "step": step, "tokens_seen": tokens_seen, "train_time_s": round(time_before + time.time() - t_start, 2)}
        if stopped:
            m["stopped"] = stopped
        return m

    def write_run_info(stopped: str | None = None) -> None:
        full = {**record, "metrics": summary(stopped), "model_digest": model_digest}
        write_info(run_dir, full)
        write_text(run_dir / "MODEL_CARD.md", model_card({**full, "gencraft_version": __version__})
                   + pictures_markdown(run_dir))

    def checkpoint() -> None:
        save_checkpoint(run_dir, net, opt, gen, {
            "kind": KIND, "preset": preset, "run_id": run_id, "created": created, "model": asdict(mcfg),
            "train": asdict(tc), "kl": asdict(kc), "manifest_digest": ds.manifest.get("digest", ""),
            "step": step, "best_val_loss": best, "best_metrics": best_metrics, "bad_evals": bad_evals,
            "tokens_seen": tokens_seen, "train_time_s": time_before + time.time() - t_start,
            "model_digest": model_digest})

    bar = Progress(progress, tc.max_iters, step)
    runlog = RunLog(run_dir, total=tc.max_iters, start_step=step, max_time=tc.max_time, time_before=time_before)
    autosave = Autosave(run_dir, every_s=tc.checkpoint_every, every_steps=tc.checkpoint_interval or tc.eval_interval,
                        step=step, log=bar.log)
    sample_tok = load_run_tokenizer(ds.path)
    stopped = None
    loss_sum, loss_n = 0.0, 0
    t_log, tokens_log = t_start, tokens_seen
    net.train()
    autosave.start()
    try:
        while step < tc.max_iters:
            elapsed = time_before + time.time() - t_start
            lr = lr_at(step, tc, elapsed / tc.max_time if tc.max_time else 0.0)
            for g in opt.param_groups:
                g["lr"] = lr
            beta = kl_weight(step, kc, tc.max_iters, elapsed / tc.max_time if tc.max_time else 0.0)
            idx = torch.randint(len(train_s), (tc.batch_size,), generator=gen).tolist()
            x, lengths = pad_batch([train_s[i] for i in idx], mcfg.eos_id, dev)
            out = net(x, lengths)
            ntok = out["tokens"].clamp(min=1)
            kl_dims = out["kl"] / tc.batch_size  # batch-mean KL per latent dimension
            kl_term = torch.clamp(kl_dims, min=kc.free_bits).sum() * tc.batch_size if kc.free_bits else out["kl"].sum()
            loss = (out["recon"] + beta * kl_term) / ntok
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
            opt.step()
            step += 1
            tokens_seen += int(ntok)
            loss_sum += float(loss.detach())
            loss_n += 1
            if step % tc.log_interval == 0 or step == tc.max_iters:
                train_loss = loss_sum / loss_n
                loss_sum, loss_n = 0.0, 0
                if not math.isfinite(train_loss):
                    raise diverged_error(run_dir, step, "the training loss is NaN/inf")
                now = time.time()
                tps = (tokens_seen - tokens_log) / max(now - t_log, 1e-9)
                t_log, tokens_log = now, tokens_seen
                bar.update(step, train_loss, tps)
                runlog.log({"step": step, "split": "train", "loss": round(train_loss, 5),
                            "recon": round(float(out["recon"].detach() / ntok), 5),
                            "kl": round(float(out["kl"].detach().sum() / ntok), 5), "beta": round(beta, 4),
                            "lr": lr, "tokens_per_s": round(tps, 1), "time_s": round(time_before + now - t_start, 2)})
            out_of_time = bool(tc.max_time) and time_before + time.time() - t_start >= tc.max_time
            last = step == tc.max_iters or out_of_time
            if step % tc.eval_interval == 0 or last:
                ev = evaluate(net, val_s, tc.batch_size, dev, seed=tc.seed + 1)
                if not math.isfinite(ev["nelbo"]):
                    raise diverged_error(run_dir, step, "the validation loss is NaN/inf")
                improved = ev["nelbo"] < best
                if improved:
                    best, best_metrics, bad_evals = ev["nelbo"], ev, 0
                    model_digest = save_weights(net, run_dir / "model.safetensors")
                else:
                    bad_evals += 1
                runlog.log({"step": step, "split": "val", "loss": round(ev["nelbo"], 5),
                            **{k: round(v, 5) if isinstance(v, float) else v for k, v in ev.items()},
                            "beta": round(beta, 4), "best": round(best, 5),
                            "time_s": round(time_before + time.time() - t_start, 2)})
                if sample_tok is not None:
                    runlog.text_samples(step, prior_samples(net, sample_tok, seed=tc.seed))
                bar.log(f"step {step}: val -ELBO {ev['nelbo']:.4f}/token (recon {ev['recon']:.4f}, "
                        f"KL {ev['kl']:.4f}), active units {ev['active_units']}/{mcfg.n_latent}, beta {beta:.2f}"
                        + (" (best)" if improved else ""))
                if improved:
                    write_run_info()
                if tc.patience and bad_evals >= tc.patience:
                    stopped = f"early stopping: {bad_evals} evaluations without improvement"
            if out_of_time and stopped is None:
                stopped = f"max_time: {tc.max_time:g} s budget spent"
            if autosave.stopping and stopped is None:
                stopped = f"{autosave.signal_name}: stopped at step {step}"
            if autosave.due(step) or last or stopped:
                checkpoint()
                autosave.saved(step)
            if stopped:
                break
    finally:
        autosave.close()
        bar.close()
        runlog.close()
    if stopped:
        bar.log(stopped)
    if (run_dir / "model.safetensors").is_file():  # the file's own digest: a resumed run's checkpoint
        model_digest = sha256_file(run_dir / "model.safetensors")  # may predate the best weights saved after it
    if model_digest:  # no evaluated weights yet (stopped early): no gencraft.json, the mark says why
        write_run_info(stopped)
    autosave.finish(step)  # after a signal: raises Interrupted (the CLI exits 130)
    return run_dir


def prior_samples(model: TextVAE, tokenizer, n: int = 3, seed: int = 0) -> list[str]:
    """Greedy decodings of ``n`` fixed draws from the prior (the same latents at every evaluation,
    so successive samples show what the decoder learned), leaving the model's mode as it was."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.config.n_latent, generator=g).to(model.lm_head.weight.device)
    was = model.training
    model.eval()
    try:
        return decode_latents(model, tokenizer, z, max_new_tokens=min(model.config.block_size, 64))
    finally:
        model.train(was)


def load_text_vae(run: str | os.PathLike[str], device: str | torch.device = "cpu"):
    """Load a text_vae run: ``(model in eval mode, info, run_path)``."""
    path, info = read_info(run)
    if info["kind"] != KIND:
        raise RunError(f"{path}: a {info['kind']} run, not a text_vae run; train one with "
                       "`gencraft train DATASET --model text_vae`", param="model")
    model = TextVAE(run_model_config(path, info, TextVAEConfig))
    load_run_weights(model, path, info)
    return model.to(device).eval(), info, path

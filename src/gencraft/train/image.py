"""The image training loop: VAE, DCGAN and StyleGAN on a prepared image dataset.

``train_image(dataset, kind, out=RUN)`` writes the run directory of docs/architecture.md:
``gencraft.json`` (kind vae|dcgan|stylegan), ``model.safetensors`` (the checkpoint with the best
FID-proxy against the held-out split, not the last step), ``metrics.jsonl``, ``MODEL_CARD.md``,
``data_manifest.json``, ``samples/step_N.png`` grids and ``checkpoints/last/`` for ``resume=True``.

A step is one minibatch: for the VAE one update of the negative ELBO; for the GANs one
discriminator update (with DiffAugment on small datasets, R1 for StyleGAN) then one generator
update and an EMA update of the generator's weights. A non-finite or exploding loss stops training
with :class:`~gencraft.errors.TrainingDiverged`; ``checkpoints/last`` then still holds the last
good state (checkpoints are only written after finite steps).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file

from gencraft import __version__
from gencraft.config import Limit, Range, apply_overrides, check_value, from_dict, validate
from gencraft.data.images import ImageDataset, load_image_dataset, split_indices
from gencraft.errors import ConfigError, RunError, TrainingDiverged, UsageError
from gencraft.io import atomic_dir, now_iso, recover_dir, write_json, write_text
from gencraft.models import IMAGE_KINDS, build, family
from gencraft.models.dcgan import d_loss, g_loss
from gencraft.models.image_common import diff_augment, ema_decay, to_uint8, to_unit, update_ema
from gencraft.paths import run_path
from gencraft.post.image import make_grid, save_png
from gencraft.runs import load_weights, new_run_id, run_status, save_weights, sha256_file, write_info
from gencraft.schemas import CheckpointState, read_json
from gencraft.train.autosave import Autosave
from gencraft.train.common import check_training_memory, pick_device
from gencraft.train.curves import pictures_markdown
from gencraft.train.image_eval import Evaluator, sample_for_eval
from gencraft.train.metrics import RunLog

KINDS = IMAGE_KINDS


@dataclass
class ImageTrainConfig:
    steps: int = 3000
    batch_size: int = 64
    lr: float = 0.0  # 0 = the model family's default (see KIND_DEFAULTS)
    lr_d: float = 0.0  # discriminator learning rate; 0 = the family default
    beta1: float = -1.0  # Adam betas; < 0 = the family default
    beta2: float = -1.0
    seed: int = 0
    conditional: str = "auto"  # auto (when the dataset has >= 2 classes) | on | off
    diffaug: str = "auto"  # auto (on below diffaug_below images) | on | off; GANs only
    diffaug_policy: str = "color,translation"  # add ",cutout" for larger images (hurt 16 px digits)
    diffaug_cutout: float = 0.5  # side of the cutout square, as a fraction of the image side
    diffaug_below: int = 5000
    val_fraction: float = 0.2  # held-out split that selects the checkpoint by FID-proxy
    eval_every: int = 500  # FID-proxy on the held-out split + checkpoint
    sample_every: int = 500  # sample grid in samples/
    log_every: int = 50
    diverge_at: float = 1e5  # |loss| above this (or NaN) stops training
    checkpoint_every: float = 300.0  # seconds between checkpoints/last besides each evaluation; 0 = off

    LIMITS: ClassVar[dict[str, Limit]] = {
        "steps": Range(1, 10**9), "batch_size": Range(1, 1 << 16), "lr": Range(0, 10), "lr_d": Range(0, 10),
        "beta1": Range(-1, 1, hi_open=True), "beta2": Range(-1, 1, hi_open=True), "seed": Range(0, 2**63 - 1),
        "conditional": ("auto", "on", "off"), "diffaug": ("auto", "on", "off"),
        "diffaug_cutout": Range(0, 1, lo_open=True), "diffaug_below": Range(0, 10**9),
        "val_fraction": Range(0, 1, lo_open=True, hi_open=True), "eval_every": Range(1, 10**9),
        "sample_every": Range(1, 10**9), "log_every": Range(1, 10**9), "diverge_at": Range(0, 1e30, lo_open=True),
        "checkpoint_every": Range(0, 10**7)}


KIND_DEFAULTS: dict[str, dict[str, float]] = {
    "vae": dict(lr=1e-3, lr_d=0.0, beta1=0.9, beta2=0.999),
    # DCGAN: 2e-4 for both (DCGAN's); with the minibatch-std D this reached 1.26x the floor in 1,500 steps
    # StyleGAN: 2e-3 for D too (StyleGAN2's equal rates); D at 4e-4 learned too slowly for G to follow
    "dcgan": dict(lr=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999),
    "stylegan": dict(lr=2e-3, lr_d=2e-3, beta1=0.0, beta2=0.99),
}


def model_module(kind: str):
    """The family of image model ``kind``: ``(config class, model class, presets)``."""
    fam = family(kind, "image")
    return fam.config, fam.model, fam.presets


def build_image_model(kind: str, cfg: Any) -> torch.nn.Module:
    return build(kind, cfg)


# ---- optimizer state <-> safetensors ---------------------------------------------------------

def _flatten_optimizers(opts: dict[str, torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    structure: dict[str, Any] = {}
    for name, opt in opts.items():
        sd = opt.state_dict()
        keys: dict[str, list[str]] = {}
        for pid, st in sd["state"].items():
            keys[str(pid)] = []
            for k, v in st.items():
                t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
                tensors[f"{name}.{pid}.{k}"] = t.detach().cpu().contiguous()
                keys[str(pid)].append(k)
        structure[name] = {"param_groups": sd["param_groups"], "state_keys": keys}
    return tensors, structure


def _restore_optimizers(opts: dict[str, torch.optim.Optimizer], tensors: dict[str, torch.Tensor],
                        structure: dict[str, Any]) -> None:
    for name, opt in opts.items():
        s = structure[name]
        state = {int(pid): {k: tensors[f"{name}.{pid}.{k}"] for k in ks} for pid, ks in s["state_keys"].items()}
        groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in s["param_groups"]]
        opt.load_state_dict({"state": state, "param_groups": groups})


# ---- the loop ----------------------------------------------------------------------------------

@dataclass
class _Setup:
    kind: str
    model: torch.nn.Module
    mcfg: Any
    tcfg: ImageTrainConfig
    opts: dict[str, torch.optim.Optimizer]
    augment: bool


def _resolve(kind: str, ds: ImageDataset, preset: str, tcfg: ImageTrainConfig) -> tuple[Any, ImageTrainConfig]:
    cfg_cls, _, presets = model_module(kind)
    if preset not in presets:
        raise UsageError(f"--preset {preset!r}: expected one of {', '.join(presets)} for {kind}", param="preset")
    if tcfg.conditional not in ("auto", "on", "off"):
        raise ConfigError(f"conditional={tcfg.conditional!r}: expected auto, on or off", param="conditional")
    if tcfg.diffaug not in ("auto", "on", "off"):
        raise ConfigError(f"diffaug={tcfg.diffaug!r}: expected auto, on or off", param="diffaug")
    n_classes = ds.n_classes
    if tcfg.conditional == "on" and not n_classes:
        raise UsageError(f"{ds.path}: --set conditional=on needs a labelled dataset (one sub-folder per class)",
                         param="conditional")
    if tcfg.conditional == "off":
        n_classes = 0
    mcfg = cfg_cls(**{**presets[preset], "img_size": ds.size, "channels": ds.channels, "n_classes": n_classes})
    return mcfg, tcfg


def _make(kind: str, mcfg: Any, tcfg: ImageTrainConfig, n_images: int,
          device: torch.device = torch.device("cpu")) -> _Setup:
    d = KIND_DEFAULTS[kind]
    lr = tcfg.lr or d["lr"]
    lr_d = tcfg.lr_d or d["lr_d"] or lr
    betas = (tcfg.beta1 if tcfg.beta1 >= 0 else d["beta1"], tcfg.beta2 if tcfg.beta2 >= 0 else d["beta2"])
    model = build_image_model(kind, mcfg).to(device)
    if kind == "vae":
        opts = {"opt": torch.optim.Adam(model.parameters(), lr=lr, betas=betas)}
    else:
        opts = {"opt_g": torch.optim.Adam(model.G.parameters(), lr=lr, betas=betas),
                "opt_d": torch.optim.Adam(model.D.parameters(), lr=lr_d, betas=betas)}
    augment = kind != "vae" and (tcfg.diffaug == "on" or (tcfg.diffaug == "auto" and n_images < tcfg.diffaug_below))
    return _Setup(kind, model, mcfg, tcfg, opts, augment)


def _vae_step(s: _Setup, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
    loss, stats = s.model.loss(x, y)
    s.opts["opt"].zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(s.model.parameters(), 100.0)
    s.opts["opt"].step()
    return stats


def _gan_step(s: _Setup, x: torch.Tensor, y: torch.Tensor | None, step: int) -> dict[str, float]:
    m, cfg = s.model, s.mcfg
    style = s.kind == "stylegan"
    aug = (lambda t: diff_augment(t, s.tcfg.diffaug_policy, s.tcfg.diffaug_cutout)) if s.augment else (lambda t: t)
    b = x.shape[0]
    loss_kind = "ns" if style else cfg.loss

    def gen(z: torch.Tensor, update_avg: bool = False) -> torch.Tensor:
        if style:
            return m.G(z, y, mix_prob=cfg.mix_prob, update_avg=update_avg)
        return m.G(z, y)

    # discriminator
    m.D.requires_grad_(True)
    with torch.no_grad():
        fake = gen(torch.randn(b, cfg.z_dim, device=x.device))
    real_in = aug(x)
    r1 = style and step % cfg.r1_every == 0 and cfg.r1_gamma > 0
    if r1:
        real_in = real_in.detach().requires_grad_(True)
    d_real, d_fake = m.D(real_in, y), m.D(aug(fake), y)
    loss_d = d_loss(loss_kind, d_real, d_fake)
    stats = {"loss_d": loss_d.item(), "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}
    if r1:  # R1: penalise D's gradient on real images (lazy: every r1_every steps, scaled up)
        (grad,) = torch.autograd.grad(d_real.sum(), real_in, create_graph=True)
        penalty = grad.pow(2).flatten(1).sum(1).mean()
        loss_d = loss_d + cfg.r1_gamma / 2 * penalty * cfg.r1_every
        stats["r1"] = penalty.item()
    s.opts["opt_d"].zero_grad(set_to_none=True)
    loss_d.backward()
    s.opts["opt_d"].step()
    # generator
    m.D.requires_grad_(False)
    fake = gen(torch.randn(b, cfg.z_dim, device=x.device), update_avg=True)
    loss_g = g_loss(loss_kind, m.D(aug(fake), y))
    s.opts["opt_g"].zero_grad(set_to_none=True)
    loss_g.backward()
    s.opts["opt_g"].step()
    m.D.requires_grad_(True)
    update_ema(m.G_ema, m.G, ema_decay(step, cfg.ema_halflife))
    stats["loss_g"] = loss_g.item()
    stats["loss"] = stats["loss_d"] + stats["loss_g"]
    return stats


def _save_checkpoint(run: Path, s: _Setup, state: dict[str, Any], data_gen: torch.Generator) -> None:
    tensors, structure = _flatten_optimizers(s.opts)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.data"] = data_gen.get_state()
    dev = next(s.model.parameters()).device
    if dev.type == "cuda":  # the latents and augmentations of a GPU run are drawn there
        tensors["rng.cuda"] = torch.cuda.get_rng_state(dev)
    with atomic_dir(run / "checkpoints" / "last") as tmp:
        save_weights(s.model, tmp / "model.safetensors")
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        write_json(tmp / "state.json", {**state, "optimizers": structure})


def _check_finite(stats: dict[str, float], step: int, run: Path, last_ckpt: int | None, limit: float) -> None:
    for k, v in stats.items():
        if not math.isfinite(v) or abs(v) > limit:
            kept = (f"the last good checkpoint (step {last_ckpt}) is kept in {run / 'checkpoints' / 'last'}"
                    if last_ckpt is not None else "no checkpoint had been written yet")
            raise TrainingDiverged(f"training diverged at step {step}: {k} = {v}; {kept}; lower the learning "
                                   "rate (--set lr=...) and --resume, or start again", param="lr")


def _model_card(info: dict[str, Any], manifest: dict[str, Any]) -> str:
    m = info.get("metrics", {})
    lic = sorted({s.get("license", "unknown") for s in manifest.get("sources", [])})
    lines = [f"# {info['kind']} image model", "",
             f"Run `{info['run_id']}`, trained by gencraft {info.get('gencraft_version', '')} on {info['created']}.", "",
             "## Data", "",
             f"Dataset `{manifest.get('name')}` ({manifest.get('source')}): {manifest.get('images')} images of "
             f"{'x'.join(map(str, manifest.get('shape', [])))}, classes: {', '.join(manifest.get('classes', [])) or 'none'}.",
             f"Licenses of the sources: {', '.join(lic)}. Sources and their sha256 are in `data_manifest.json`.", "",
             "## Metrics (FID-proxy: features of a classifier gencraft trained on this dataset; not comparable "
             "with Inception FID)", "",
             "| metric | model | real-data floor |", "| --- | --- | --- |"]
    floor = m.get("floor", {})
    for k in ("fid", "kid", "precision", "recall", "cond_acc", "nn_dist_mean"):
        if k in m:
            lines.append(f"| {k} | {m[k]:.4g} | {floor.get(k, float('nan')):.4g} |")
    if "nelbo" in m:
        lines.append(f"| negative ELBO (nats/image, held-out) | {m['nelbo']:.2f} | |")
        lines.append(f"| bits/dim | {m['bpd']:.4f} | |")
    lines += ["", f"Selected checkpoint: step {m.get('best_step')} of {m.get('step')} "
              f"({m.get('train_time_s', 0):.0f} s of training).", "",
              "## Intended use and limitations", "",
              "Making new images in the style of the training images (sprites, icons, glyphs). The model can "
              "reproduce training images nearly verbatim on small datasets: check `nn_dist` (distance of each "
              "sample to its nearest training image) before publishing. It knows nothing beyond its dataset.", ""]
    return "\n".join(lines)


def train_image(dataset: str | os.PathLike[str], kind: str = "dcgan", *, out: str | os.PathLike[str] | None = None,
                preset: str = "small", overrides: list[str] | None = None, resume: bool = False,
                max_time: float | None = None, seed: int | None = None, steps: int | None = None,
                overwrite: bool = False, progress: Callable[[int, int, dict[str, float]], None] | None = None,
                device: str | None = None) -> dict[str, Any]:
    """Train an image model; returns the run's gencraft.json (as written).

    ``device``: ``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``; default the CPU.
    The weights are saved on the CPU either way, so a run trained on a GPU loads anywhere.
    """

    dev = pick_device(device or "cpu")
    ds = load_image_dataset(dataset)
    run = run_path(out if out is not None else f"{ds.path.name}-{kind}")
    tcfg = ImageTrainConfig()
    last = run / "checkpoints" / "last"
    if resume:
        recover_dir(last)  # a kill in the middle of replacing it leaves the previous one aside
        if not (last / "state.json").is_file():
            raise RunError(f"{run}: nothing to resume (no checkpoints/last/state.json); train without --resume",
                           param="resume")
        state = read_json(last / "state.json", CheckpointState, hint="the checkpoint is corrupted")
        if state.get("kind") != kind:
            raise UsageError(f"{run}: the checkpoint is a {state.get('kind')} run, not {kind}; pass --model {state.get('kind')}",
                             param="model")
        if state.get("dataset_digest") != ds.manifest.get("digest"):
            raise UsageError(f"{run}: the checkpoint was trained on another dataset; resume with the same one", param="dataset")
        cfg_cls = model_module(kind)[0]
        mcfg = from_dict(cfg_cls, state["model"])
        tcfg = from_dict(ImageTrainConfig, state["train"])
        (tcfg,) = apply_overrides([tcfg], overrides)
    else:
        if run.exists() and not run.is_dir():
            raise UsageError(f"--out {run}: is a file, not a run folder; choose another --out", param="out")
        if run_status(run)["state"] == "training":
            raise UsageError(f"{run}: process {run_status(run).get('pid')} is training this run now; wait for it, "
                             "stop it (Ctrl-C), or choose another --out", param="out")
        if run.exists() and any(run.iterdir()) and not overwrite:
            raise UsageError(f"{run}: already exists; pass --resume to continue it, --overwrite to replace it, "
                             "or choose another --out", param="out")
        cfg_cls, _, presets = model_module(kind)
        mcfg, tcfg = _resolve(kind, ds, preset, tcfg)
        mcfg, tcfg = apply_overrides([mcfg, tcfg], overrides)
        state = {}
    if seed is not None:
        tcfg.seed = seed
    if steps is not None:
        tcfg.steps = steps
    validate(tcfg)
    validate(mcfg)
    if max_time is not None:
        check_value("--max-time", max_time, Range(0, 10**9, lo_open=True))

    check_training_memory(kind, mcfg, batch=tcfg.batch_size, positions=mcfg.img_size ** 2,
                          width=max(getattr(mcfg, a, 0) for a in ("ch", "g_ch", "d_ch", "max_ch")), depth=4)
    torch.manual_seed(tcfg.seed)
    setup = _make(kind, mcfg, tcfg, len(ds.images), dev)  # may raise ConfigError on a bad size or option
    train_idx, _ = split_indices(len(ds.images), tcfg.val_fraction, 0)
    if len(train_idx) < 2:
        raise UsageError(f"{ds.path}: {len(ds.images)} images are too few to train on (need at least 10)", param="dataset")
    # the whole training split lives on the device: image datasets here are small (digits: 1.4k x 16 x 16)
    x_all = to_unit(torch.from_numpy(ds.images[train_idx])).to(dev)
    y_all = torch.from_numpy(ds.labels[train_idx]).to(dev) if mcfg.n_classes else None
    data_gen = torch.Generator().manual_seed(tcfg.seed)

    created_dir = not run.exists()
    if not resume and run.exists() and overwrite:
        shutil.rmtree(run)
        created_dir = True
    run.mkdir(parents=True, exist_ok=True)
    try:
        with Autosave(run, every_s=tcfg.checkpoint_every, every_steps=tcfg.eval_every,
                      step=int(state.get("step", 0))) as autosave:
            return _train(run, ds, setup, state, x_all, y_all, data_gen, resume, max_time, progress, autosave)
    except BaseException:
        if created_dir and not (run / "checkpoints" / "last").exists():
            shutil.rmtree(run, ignore_errors=True)  # nothing worth keeping: leave nothing behind
        raise


def _train(run: Path, ds: ImageDataset, s: _Setup, state: dict[str, Any], x_all: torch.Tensor,
           y_all: torch.Tensor | None, data_gen: torch.Generator, resume: bool, max_time: float | None,
           progress: Callable[[int, int, dict[str, float]], None] | None, autosave: Autosave) -> dict[str, Any]:
    tcfg, model, kind = s.tcfg, s.model, s.kind
    last = run / "checkpoints" / "last"
    step, elapsed, best_fid, best_step = 0, 0.0, math.inf, None
    run_id, created = new_run_id(), now_iso()
    if resume:
        load_weights(model, last / "model.safetensors")
        tensors = load_file(str(last / "optimizer.safetensors"))
        _restore_optimizers(s.opts, tensors, state["optimizers"])
        torch.set_rng_state(tensors["rng.torch"])
        data_gen.set_state(tensors["rng.data"])
        dev = next(model.parameters()).device
        if dev.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], dev)
        step, elapsed = int(state["step"]), float(state["train_time_s"])
        best_fid = state.get("best_fid") if state.get("best_fid") is not None else math.inf
        best_step = state.get("best_step")
        run_id, created = state.get("run_id", run_id), state.get("created", created)
    last_ckpt = step if resume else None
    ev = Evaluator.for_dataset(ds, tcfg.val_fraction, 0)
    write_json(run / "data_manifest.json", ds.manifest)
    n = len(x_all)
    bs = min(tcfg.batch_size, n)
    model.train()
    t0 = time.perf_counter()
    start_elapsed, start_step = elapsed, step
    runlog = RunLog(run, total=tcfg.steps, start_step=step, max_time=max_time)
    summary: dict[str, Any] = {}
    info: dict[str, Any] = {}

    def base_info() -> dict[str, Any]:
        return {"kind": kind, "run_id": run_id, "created": created,
                "model": asdict(s.mcfg), "train": asdict(tcfg),
                "image": {"size": ds.size, "channels": ds.channels, "classes": ds.classes if s.mcfg.n_classes else [],
                          "options": ds.manifest.get("options", {})},
                "data": {"dataset": str(ds.path), "manifest_digest": ds.manifest.get("digest"),
                         "sources": [{k: src.get(k) for k in ("path", "sha256", "license")}
                                     for src in ds.manifest.get("sources", [])][:1000]}}

    def evaluate_now() -> dict[str, Any]:
        samples, labels = sample_for_eval(model, ev.n_samples, s.mcfg.n_classes, seed=1234)
        rec = ev.score(samples, labels)
        if kind == "vae":
            rec.update(_vae_heldout_nelbo(model, ds, tcfg.val_fraction))
        return rec

    def checkpoint() -> None:
        nonlocal last_ckpt
        _save_checkpoint(run, s, {"kind": kind, "step": step, "train_time_s": elapsed, "best_fid": None if math.isinf(best_fid) else best_fid,
                                  "best_step": best_step, "run_id": run_id, "created": created,
                                  "dataset_digest": ds.manifest.get("digest"), "model": asdict(s.mcfg),
                                  "train": asdict(tcfg)}, data_gen)
        last_ckpt = step

    stopped_by_time = False
    while step < tcfg.steps:
        idx = torch.randint(0, n, (bs,), generator=data_gen).to(x_all.device)
        x = x_all[idx]
        y = y_all[idx] if y_all is not None else None
        stats = _vae_step(s, x, y) if kind == "vae" else _gan_step(s, x, y, step)
        step += 1
        _check_finite(stats, step, run, last_ckpt, tcfg.diverge_at)
        elapsed = start_elapsed + time.perf_counter() - t0
        if step % tcfg.log_every == 0 or step == tcfg.steps:
            rec = {"step": step, "split": "train", **{k: round(v, 5) for k, v in stats.items()},
                   "images_per_s": round((step - start_step) * bs / max(elapsed - start_elapsed, 1e-9), 1),
                   "time_s": round(elapsed, 2)}
            runlog.log(rec)
        if progress:
            progress(step, tcfg.steps, stats)
        out_of_time = max_time is not None and elapsed - start_elapsed >= max_time
        if step % tcfg.sample_every == 0 or step == tcfg.steps or out_of_time:
            _write_grid(run / "samples" / f"step_{step:06d}.png", model, s.mcfg.n_classes, tcfg.seed)
            runlog.image(step, run / "samples" / f"step_{step:06d}.png")
        if step % tcfg.eval_every == 0 or step == tcfg.steps or out_of_time:
            rec = evaluate_now()
            runlog.log({"step": step, "split": "heldout", **{k: round(v, 6) for k, v in rec.items()}})
            if rec["fid"] < best_fid:
                best_fid, best_step = rec["fid"], step
                digest = save_weights(model, run / "model.safetensors")
                summary = {**rec, "best_step": step, "floor": ev.floor}
                info = {**base_info(), "metrics": {**summary, "step": step, "best_fid": best_fid,
                                                   "train_time_s": round(elapsed, 2)}, "model_digest": digest}
                write_info(run, info)
            checkpoint()
            autosave.saved(step)
            model.train()
        elif autosave.due(step):  # between evaluations: every checkpoint_every seconds, or a signal
            checkpoint()
            autosave.saved(step)
        if out_of_time:
            stopped_by_time = True
            break
        if autosave.stopping:
            break

    runlog.close()
    if autosave.stopping and not (run / "gencraft.json").is_file():
        autosave.finish(step)  # no evaluated weights yet: the mark and the checkpoint are all there is
    if not info:  # resumed after the best checkpoint: refresh the summary from the existing files
        _, info = _read_existing(run)
    info["metrics"] = {**info.get("metrics", {}), "step": step, "train_time_s": round(elapsed, 2),
                       "stopped_by_max_time": stopped_by_time}
    info["model_digest"] = sha256_file(run / "model.safetensors")
    write_info(run, info)
    write_text(run / "MODEL_CARD.md", _model_card({**info, "gencraft_version": _version()}, ds.manifest)
               + pictures_markdown(run))
    autosave.finish(step)  # after a signal: raises Interrupted (the CLI exits 130)
    return info


def _version() -> str:
    return __version__


def _read_existing(run: Path) -> tuple[Path, dict[str, Any]]:
    p = run / "gencraft.json"
    if not p.is_file():
        raise RunError(f"{run}: no gencraft.json; the run has no evaluated checkpoint yet, train longer")
    return run, json.loads(p.read_text(encoding="utf-8"))


@torch.no_grad()
def _vae_heldout_nelbo(model: torch.nn.Module, ds: ImageDataset, val_fraction: float) -> dict[str, float]:
    """Negative ELBO (nats/image) and bits/dim on the held-out split (one posterior sample; fixed seed)."""
    _, va = split_indices(len(ds.images), val_fraction, 0)
    dev = next(model.parameters()).device
    x = to_unit(torch.from_numpy(ds.images[va])).to(dev)
    y = torch.from_numpy(ds.labels[va]).to(dev) if model.cfg.n_classes else None
    model.eval()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        tot, bpd = 0.0, 0.0
        for i in range(0, len(x), 256):
            _, st = model.loss(x[i:i + 256], y[i:i + 256] if y is not None else None)
            k = len(x[i:i + 256])
            tot += st["nelbo"] * k
            bpd += st["bpd"] * k
    return {"nelbo": tot / len(x), "bpd": bpd / len(x)}


def _write_grid(path: Path, model: torch.nn.Module, n_classes: int, seed: int) -> None:
    n = max(n_classes, 1) * (8 if n_classes else 64) if n_classes <= 16 else 64
    n = min(n, 128)
    g = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    y = (torch.arange(n) % n_classes).to(dev) if n_classes else None
    was = model.training
    model.eval()
    with torch.random.fork_rng():
        imgs = to_uint8(model.sample(n, y, generator=g)).cpu().numpy()
    model.train(was)
    grid = make_grid(imgs, nrow=n_classes if n_classes and n_classes <= 16 else None)
    save_png(grid, path)

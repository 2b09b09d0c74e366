"""Training a voice: the acoustic model and the vocoder on a speech dataset (``--model tts``).

``train_speech(DATASET, preset="small", out=RUN)`` trains the acoustic model (:mod:`gencraft.models.tts`)
and then the vocoder (:mod:`gencraft.models.vocoder`) into one run directory; ``part="acoustic"`` or
``"vocoder"`` trains one of them (the other keeps what it has). Each part is one loop, read top to
bottom: batches of whole utterances (acoustic) or random one-third-second windows (vocoder), AdamW with
the shared warmup + cosine schedule (:mod:`gencraft.train.optim`, driven by steps or ``--max-time``),
evaluation on the held-out utterances, best weights kept, ``checkpoints/last`` for an exact
``--resume``, a stop with :class:`TrainingDiverged` at the first non-finite loss (the last good
checkpoint is kept).

Run directory (docs/architecture.md): ``gencraft.json`` (kind ``tts``), ``model.safetensors``
(acoustic), ``vocoder.safetensors`` (generator only), ``phonemes.json``, ``data_manifest.json``,
``metrics.jsonl`` + TensorBoard events through the shared :class:`~gencraft.train.metrics.RunLog` (every
record has ``"part"``; the vocoder's splits are ``vocoder_train``/``vocoder_val``), ``MODEL_CARD.md`` and ``parts/PART/checkpoints/last``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from gencraft import __version__, audio
from gencraft.config import apply_overrides, from_dict, parse_overrides
from gencraft.data.speech import SpeechDataset, load_speech_dataset
from gencraft.errors import ConfigError, TrainingDiverged, UsageError
from gencraft.io import now_iso, write_bytes, write_text
from gencraft.models.tts import PRESETS as TTS_PRESETS
from gencraft.models.tts import TTS, TTSConfig
from gencraft.models.vocoder import PRESETS as VOC_PRESETS
from gencraft.models.vocoder import Vocoder, VocoderConfig, discriminator_loss, generator_loss
from gencraft.paths import run_path
from gencraft.runs import new_run_id, read_info, save_weights, write_info
from gencraft.train.autosave import Autosave
from gencraft.train.checkpoint import CHECKPOINT, load_checkpoint, read_checkpoint_state, save_checkpoint
from gencraft.train.common import pick_device
from gencraft.train.config import TrainConfig, check
from gencraft.train.metrics import RunLog
from gencraft.train.optim import lr_at, make_optimizer

KIND = "tts"
PARTS = ("acoustic", "vocoder")
TIME_SHARE = {"acoustic": 0.6, "vocoder": 0.4}  # of --max-time when both parts train

TRAIN_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "acoustic": {
        "tiny": dict(batch_size=4, learning_rate=2e-3, min_lr=2e-4, warmup_iters=5, max_iters=30, eval_interval=15,
                     eval_iters=1, weight_decay=0.01, log_interval=5),
        "small": dict(batch_size=8, learning_rate=1e-3, min_lr=5e-5, warmup_iters=200, max_iters=8000,
                      eval_interval=250, eval_iters=4, weight_decay=0.01, beta2=0.98, log_interval=25),
    },
    "vocoder": {
        "tiny": dict(batch_size=2, learning_rate=2e-3, min_lr=2e-4, warmup_iters=2, max_iters=20, eval_interval=10,
                     eval_iters=1, weight_decay=0.0, beta1=0.8, beta2=0.99, log_interval=5),
        "small": dict(batch_size=8, learning_rate=1e-3, min_lr=5e-5, warmup_iters=100, max_iters=6000,
                      eval_interval=250, eval_iters=4, weight_decay=0.0, beta1=0.8, beta2=0.99, log_interval=25),
    },
}


@dataclass
class VocoderLoss:
    """What the vocoder's training step does beyond the optimizer's settings."""

    segment_frames: int = 32  # mel frames per training window (32 x 256 = 8,192 samples, 0.37 s)
    lambda_mel: float = 45.0  # weight of the log-mel L1 (HiFi-GAN's and Vocos's)
    lambda_fm: float = 2.0  # weight of feature matching
    gan_start: int = 0  # steps of mel loss alone before the discriminators join (0 = from the start)


# ---- data ------------------------------------------------------------------------------------------


class Corpus:
    """Every utterance of one split in memory: phoneme ids, 16-bit audio and log-mel."""

    def __init__(self, ds: SpeechDataset, split: str) -> None:
        self.utts = ds.split(split)
        self.ids = [torch.tensor(ds.ids(u), dtype=torch.long) for u in self.utts]
        self.wavs = [torch.from_numpy(audio.to_pcm16(ds.wav(u))) for u in self.utts]
        self.mels = [audio.log_mel(w.float() / 32767.0) for w in self.wavs]
        keep = [i for i, (x, m) in enumerate(zip(self.ids, self.mels, strict=True)) if 0 < len(x) <= m.shape[1]]
        self.ids, self.wavs, self.mels = ([v[i] for i in keep] for v in (self.ids, self.wavs, self.mels))

    def __len__(self) -> int:
        return len(self.ids)

    def mel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        allm = torch.cat(self.mels, dim=1)
        return allm.mean(1), allm.std(1)

    def text_batch(self, idx: list[int]) -> tuple[torch.Tensor, ...]:
        """Padded ``(ids, text_lens, mel, mel_lens)``; mels padded with the log floor (silence)."""
        ids = torch.nn.utils.rnn.pad_sequence([self.ids[i] for i in idx], batch_first=True)
        mels = [self.mels[i] for i in idx]
        T = max(m.shape[1] for m in mels)
        mel = torch.full((len(idx), mels[0].shape[0], T), math.log(audio.LOG_FLOOR))
        for b, m in enumerate(mels):
            mel[b, :, : m.shape[1]] = m
        return (ids, torch.tensor([len(self.ids[i]) for i in idx]), mel,
                torch.tensor([m.shape[1] for m in mels]))

    def length_batches(self, batch_size: int, gen: torch.Generator) -> list[list[int]]:
        """A shuffled epoch of batches of similar length (little padding)."""
        jitter = (1.0 + 0.2 * torch.rand(len(self), generator=gen)).tolist()  # batches differ between epochs
        pool = sorted(range(len(self)), key=lambda i: self.mels[i].shape[1] * jitter[i])
        batches = [pool[i:i + batch_size] for i in range(0, len(pool), batch_size)]
        perm = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[p] for p in perm]

    def segments(self, n: int, frames: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random windows: mel ``[n, 80, frames + 1]`` and audio ``[n, frames * hop]`` aligned with it."""
        mels, wavs = [], []
        hop = audio.HOP
        for i in torch.randint(0, len(self), (n,), generator=gen).tolist():
            m, w = self.mels[i], self.wavs[i].float() / 32767.0
            if m.shape[1] <= frames + 1:
                m = torch.nn.functional.pad(m, (0, frames + 2 - m.shape[1]), value=math.log(audio.LOG_FLOOR))
                w = torch.nn.functional.pad(w, (0, (frames + 1) * hop - len(w)))
            start = int(torch.randint(0, m.shape[1] - frames - 1 + 1, (1,), generator=gen))
            mels.append(m[:, start:start + frames + 1])
            wav = w[start * hop:(start + frames) * hop]
            wavs.append(torch.nn.functional.pad(wav, (0, frames * hop - len(wav))))
        return torch.stack(mels), torch.stack(wavs)


# ---- configs ---------------------------------------------------------------------------------------


def _split_overrides(overrides: list[str] | dict[str, str] | None, parts: tuple[str, ...],
                     configs: dict[str, list[Any]]) -> dict[str, dict[str, str]]:
    """``--set key=value`` -> per part. ``acoustic.key=value`` / ``vocoder.key=value`` name one part;
    a bare key goes to every part being trained that has such a field, and must exist in one."""
    items = parse_overrides(overrides) if not isinstance(overrides, dict) else dict(overrides or {})
    out: dict[str, dict[str, str]] = {p: {} for p in parts}
    for key, value in items.items():
        prefix, _, bare = key.partition(".")
        if bare and prefix in PARTS:
            if prefix not in parts:
                raise ConfigError(f"--set {key}: the {prefix} part is not being trained (--part)", param=key)
            out[prefix][bare] = value
            continue
        hits = [p for p in parts if any(key in {f for f in asdict(c)} for c in configs[p])]
        if not hits:
            valid = sorted({f"{p}.{f}" for p in parts for c in configs[p] for f in asdict(c)})
            raise ConfigError(f"--set {key}: unknown key; valid keys are {', '.join(valid)}", param=key)
        for p in hits:
            out[p][key] = value
    return out


def _check_model(part: str, mcfg: Any) -> None:
    names = (("d_model", "n_heads", "enc_layers", "dec_layers", "kernel_size", "dp_channels") if part == "acoustic"
             else ("dim", "intermediate", "n_layers", "mpd_channels", "mrd_channels"))
    for n in names:
        if getattr(mcfg, n) < 1:
            raise ConfigError(f"--set {n}={getattr(mcfg, n)}: must be at least 1", param=n)
    if part == "acoustic":
        if mcfg.d_model % mcfg.n_heads:
            raise ConfigError(f"--set d_model={mcfg.d_model}: must be a multiple of n_heads={mcfg.n_heads}",
                              param="d_model")
        if mcfg.kernel_size % 2 == 0:
            raise ConfigError(f"--set kernel_size={mcfg.kernel_size}: must be odd", param="kernel_size")
        if not 0.0 <= mcfg.dropout < 1.0:
            raise ConfigError(f"--set dropout={mcfg.dropout}: must be in [0, 1)", param="dropout")


def _fresh_configs(part: str, preset: str, vocab_size: int) -> list[Any]:
    if preset not in TRAIN_PRESETS[part]:
        raise UsageError(f"--preset {preset}: expected one of {', '.join(TRAIN_PRESETS[part])} for --model tts",
                         param="preset")
    tc = TrainConfig(**TRAIN_PRESETS[part][preset])
    if part == "acoustic":
        return [TTSConfig(vocab_size=vocab_size, **TTS_PRESETS[preset]), tc]
    return [VocoderConfig(**VOC_PRESETS[preset]), tc, VocoderLoss()]


# ---- the entry point -------------------------------------------------------------------------------


def train_speech(dataset: str | os.PathLike[str], *, preset: str = "tiny", part: str | None = None,
                 out: str | os.PathLike[str] | None = None, overrides: list[str] | dict[str, str] | None = None,
                 resume: bool = False, max_time: float | None = None, seed: int | None = None,
                 device: str | None = None, progress: bool = True) -> Path:
    """Train a voice (acoustic model, then vocoder) on a speech dataset; returns the run directory."""
    if part not in (None, "both", *PARTS):
        raise UsageError(f"--part {part}: expected acoustic, vocoder or both", param="part")
    parts = PARTS if part in (None, "both") else (part,)
    ds = load_speech_dataset(dataset)
    run_dir = run_path(out) if out is not None else run_path(f"{ds.path.name}-tts")
    info: dict[str, Any] = {}
    if (run_dir / "gencraft.json").is_file():
        _, info = read_info(run_dir)
        if info.get("kind") != KIND:
            raise UsageError(f"{run_dir}: a {info.get('kind')} run already exists there; choose another --out",
                             param="out")
        if info.get("data", {}).get("manifest_digest") != ds.manifest.get("digest"):
            raise UsageError(f"{run_dir}: trained on another dataset; use the same dataset or another --out",
                             param="dataset")
    vocab = ds.tokenizer.vocab_size
    configs: dict[str, list[Any]] = {}
    states: dict[str, dict[str, Any]] = {}
    for p in parts:
        ck = _part_dir(run_dir, p)
        if resume:
            st = read_checkpoint_state(ck)
            configs[p] = [from_dict(TTSConfig if p == "acoustic" else VocoderConfig, st["model"]),
                          from_dict(TrainConfig, st["train"])] + ([from_dict(VocoderLoss, st["loss"])]
                                                                 if p == "vocoder" else [])
            states[p] = st
        else:
            if (ck / CHECKPOINT).exists() or (info.get("parts", {}).get(p)):
                raise UsageError(f"{run_dir}: its {p} part is already trained; --resume to continue it, or "
                                 "choose another --out", param="out")
            configs[p] = _fresh_configs(p, preset, vocab)
    per_part = _split_overrides(overrides, parts, configs)
    for p in parts:
        before = asdict(configs[p][0])
        configs[p] = apply_overrides(configs[p], per_part[p])
        if resume and asdict(configs[p][0]) != before:
            changed = next(k for k in before if asdict(configs[p][0])[k] != before[k])
            raise ConfigError(f"--set {changed}: the model shape cannot change on --resume", param=changed)
        tc = configs[p][1]
        if seed is not None:
            tc.seed = int(seed)
        if device is not None:
            tc.device = device
        if max_time is not None:
            tc.max_time = float(max_time) * (TIME_SHARE[p] if len(parts) == 2 else 1.0)
        check(tc)
        _check_model(p, configs[p][0])
        if p == "acoustic" and configs[p][0].vocab_size < vocab:
            raise ConfigError(f"--set vocab_size: smaller than the dataset's {vocab} phonemes; leave it unset",
                              param="vocab_size")
    train_set, val_set = Corpus(ds, "train"), Corpus(ds, "val")
    if len(train_set) < 1 or len(val_set) < 1:
        raise UsageError(f"{ds.path}: needs at least one training and one held-out utterance", param="dataset")
    say = _say if progress else (lambda msg: None)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(run_dir / "phonemes.json", (ds.path / "phonemes.json").read_bytes())
    write_bytes(run_dir / "data_manifest.json", (ds.path / "manifest.json").read_bytes())
    threads = torch.get_num_threads()
    try:
        for p in parts:
            tc = configs[p][1]
            torch.set_num_threads(tc.num_threads or (os.cpu_count() or 1))
            with Autosave(run_dir, every_s=tc.checkpoint_every, every_steps=tc.eval_interval, log=say, part=p,
                          step=states.get(p, {}).get("step", 0)) as autosave:
                train_part = _train_acoustic if p == "acoustic" else _train_vocoder
                train_part(run_dir, ds, configs[p], states.get(p, {}), train_set, val_set, preset, say, autosave)
                autosave.finish(autosave.last_step or 0)  # after a signal: Interrupted (the CLI exits 130)
    finally:
        torch.set_num_threads(threads)
    return run_dir


def _say(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(msg, markup=False)


def _part_dir(run_dir: Path, part: str) -> Path:
    return run_dir / "parts" / part


def _pick_device(tc: TrainConfig) -> torch.device:

    return pick_device(tc.device)


class _Optimizers:
    """Two optimizers (generator, discriminators) seen as one by the shared checkpoint code: one state
    dict in torch's format, the second optimizer's parameter ids following the first's."""

    def __init__(self, a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
        self.a, self.b = a, b
        self.param_groups = a.param_groups + b.param_groups

    def state_dict(self) -> dict[str, Any]:
        sa, sb = self.a.state_dict(), self.b.state_dict()
        n = sum(len(g["params"]) for g in sa["param_groups"])
        groups = sa["param_groups"] + [{**g, "params": [i + n for i in g["params"]]} for g in sb["param_groups"]]
        return {"state": {**sa["state"], **{k + n: v for k, v in sb["state"].items()}}, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        ka = len(self.a.param_groups)
        n = sum(len(g["params"]) for g in sd["param_groups"][:ka])
        self.a.load_state_dict({"state": {k: v for k, v in sd["state"].items() if k < n},
                                "param_groups": sd["param_groups"][:ka]})
        self.b.load_state_dict({"state": {k - n: v for k, v in sd["state"].items() if k >= n},
                                "param_groups": [{**g, "params": [i - n for i in g["params"]]}
                                                 for g in sd["param_groups"][ka:]]})


def _diverged(run_dir: Path, part: str, step: int, what: str) -> TrainingDiverged:
    return TrainingDiverged(f"{part} training diverged at step {step} ({what} is NaN/inf); the last good checkpoint "
                            f"in {_part_dir(run_dir, part) / CHECKPOINT} is kept: lower the learning rate "
                            f"(--set {part}.learning_rate=...) and --resume", param="learning_rate")


# ---- the acoustic model ----------------------------------------------------------------------------


@torch.no_grad()
def acoustic_val_loss(model: TTS, val: Corpus, batch_size: int) -> float:
    was = model.training
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(val), batch_size):
        idx = list(range(i, min(i + batch_size, len(val))))
        _, st = model.loss(*val.text_batch(idx))
        tot += st["loss"] * len(idx)
        n += len(idx)
    model.train(was)
    return tot / max(n, 1)


def _train_acoustic(run_dir: Path, ds: SpeechDataset, cfgs: list[Any], state: dict[str, Any], train: Corpus,
                    val: Corpus, preset: str, say, autosave: Autosave) -> None:
    mcfg, tc = cfgs
    dev = _pick_device(tc)
    torch.manual_seed(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)
    model = TTS(mcfg)
    model.set_mel_stats(*train.mel_stats())
    model.to(dev)
    opt = make_optimizer(model, tc, dev.type)
    ck = _part_dir(run_dir, "acoustic")
    if state:
        load_checkpoint(ck, model, opt, gen, state)
    step, best = state.get("step", 0), state.get("best", math.inf)
    t_before, digest = state.get("train_time_s", 0.0), state.get("digest", "")
    epoch: list[list[int]] = state.get("epoch", [])
    log = RunLog(run_dir, total=tc.max_iters, start_step=step, max_time=tc.max_time or None, time_before=t_before)
    t0 = time.time()
    model.train()

    def checkpoint() -> None:
        save_checkpoint(ck, model, opt, gen, {
            "kind": "tts_acoustic", "preset": preset, "model": asdict(mcfg), "train": asdict(tc), "step": step,
            "best": best, "train_time_s": t_before + time.time() - t0, "digest": digest, "epoch": epoch,
            "manifest_digest": ds.manifest.get("digest", "")})
        autosave.saved(step)
    loss_sum, loss_n = 0.0, 0
    stopped = None
    while step < tc.max_iters:
        elapsed = t_before + time.time() - t0
        lr = lr_at(step, tc, elapsed / tc.max_time if tc.max_time else 0.0)
        for g in opt.param_groups:
            g["lr"] = lr
        if not epoch:
            epoch = train.length_batches(tc.batch_size, gen)
        batch = [b.to(dev) for b in train.text_batch(epoch.pop())]
        loss, stats = model.loss(*batch)
        if not math.isfinite(stats["loss"]):
            raise _diverged(run_dir, "acoustic", step + 1, "the training loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        step += 1
        loss_sum, loss_n = loss_sum + stats["loss"], loss_n + 1
        now = t_before + time.time() - t0
        if step % tc.log_interval == 0:
            log.log({"part": "acoustic", "step": step, "split": "train", **{k: round(v, 5) for k, v in stats.items()},
                     "loss": round(loss_sum / loss_n, 5), "lr": lr, "time_s": round(now, 2)})
            loss_sum, loss_n = 0.0, 0
        out_of_time = bool(tc.max_time) and now >= tc.max_time
        last = step == tc.max_iters or out_of_time
        if step % tc.eval_interval == 0 or last:
            v = acoustic_val_loss(model, val, tc.batch_size)
            if not math.isfinite(v):
                raise _diverged(run_dir, "acoustic", step, "the validation loss")
            improved = v < best
            if improved:
                best = v
                digest = save_weights(model, run_dir / "model.safetensors")
            log.log({"part": "acoustic", "step": step, "split": "val", "loss": round(v, 5), "best": round(best, 5),
                     "time_s": round(now, 2)})
            say(f"acoustic step {step}: val loss {v:.4f}{' (best)' if improved else ''}")
            if out_of_time:
                stopped = f"max_time: {tc.max_time:g} s budget spent"
            checkpoint()
            _write_run_info(run_dir, ds, preset, "acoustic", mcfg, tc, None, {
                "best_val_loss": best, "step": step, "train_time_s": round(now, 2),
                **({"stopped": stopped} if stopped else {})}, digest)
            if stopped:
                break
        elif autosave.due(step):  # between evaluations: every checkpoint_every seconds, or a signal
            checkpoint()
        if autosave.stopping:
            break
    log.close()


# ---- the vocoder -----------------------------------------------------------------------------------


@torch.no_grad()
def vocoder_val_loss(G: torch.nn.Module, val: Corpus, n: int) -> float:
    """Mean L1 between the log-mels of held-out recordings and of the vocoder's resynthesis of them."""
    was = G.training
    G.eval()
    tot = 0.0
    for m, w in list(zip(val.mels, val.wavs, strict=True))[:n]:
        fake = G(m[None].to(next(G.parameters()).device)).cpu()[0]
        real = w.float() / 32767.0
        k = min(len(fake), len(real))
        tot += float(torch.abs(audio.log_mel(fake[:k]) - audio.log_mel(real[:k])).mean())
    G.train(was)
    return tot / max(min(n, len(val)), 1)


def _train_vocoder(run_dir: Path, ds: SpeechDataset, cfgs: list[Any], state: dict[str, Any], train: Corpus,
                   val: Corpus, preset: str, say, autosave: Autosave) -> None:
    mcfg, tc, lc = cfgs
    dev = _pick_device(tc)
    torch.manual_seed(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)
    voc = Vocoder(mcfg).to(dev)
    opt_g, opt_d = make_optimizer(voc.G, tc, dev.type), make_optimizer(voc.D, tc, dev.type)
    opts = _Optimizers(opt_g, opt_d)
    ck = _part_dir(run_dir, "vocoder")
    if state:
        load_checkpoint(ck, voc, opts, gen, state)
    mel_fn = audio.MelSpectrogram().to(dev)
    step, best = state.get("step", 0), state.get("best", math.inf)
    t_before, digest = state.get("train_time_s", 0.0), state.get("digest", "")
    # the vocoder's records are split "vocoder_train"/"vocoder_val": TensorBoard keeps its curves apart
    log = RunLog(run_dir, total=tc.max_iters, start_step=step, max_time=tc.max_time or None, time_before=t_before)
    t0 = time.time()
    voc.train()
    stopped = None

    def checkpoint() -> None:
        save_checkpoint(ck, voc, opts, gen, {
            "kind": "tts_vocoder", "preset": preset, "model": asdict(mcfg), "train": asdict(tc),
            "loss": asdict(lc), "step": step, "best": best, "train_time_s": t_before + time.time() - t0,
            "digest": digest, "manifest_digest": ds.manifest.get("digest", "")})
        autosave.saved(step)
    while step < tc.max_iters:
        elapsed = t_before + time.time() - t0
        lr = lr_at(step, tc, elapsed / tc.max_time if tc.max_time else 0.0)
        for g in opts.param_groups:
            g["lr"] = lr
        mel, real = (t.to(dev) for t in train.segments(tc.batch_size, lc.segment_frames, gen))
        fake = voc.G(mel)
        gan = step >= lc.gan_start
        stats: dict[str, float] = {}
        if gan:  # discriminators first, on a detached copy of the generated audio
            loss_d = discriminator_loss(voc.D(real), voc.D(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(voc.D.parameters(), tc.grad_clip * 100)
            opt_d.step()
            stats["loss_d"] = loss_d.item()
        mel_loss = torch.nn.functional.l1_loss(mel_fn(fake), mel_fn(real))
        loss_g = lc.lambda_mel * mel_loss
        if gan:
            voc.D.requires_grad_(False)
            adv, fm = generator_loss(voc.D(real), voc.D(fake))
            voc.D.requires_grad_(True)
            loss_g = loss_g + adv + lc.lambda_fm * fm
            stats.update(adv=adv.item(), fm=fm.item())
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(voc.G.parameters(), tc.grad_clip * 100)
        opt_g.step()
        step += 1
        stats.update(mel=mel_loss.item(), loss=loss_g.item())
        if not all(math.isfinite(v) for v in stats.values()):
            raise _diverged(run_dir, "vocoder", step, next(k for k, v in stats.items() if not math.isfinite(v)))
        now = t_before + time.time() - t0
        if step % tc.log_interval == 0:
            log.log({"part": "vocoder", "step": step, "split": "vocoder_train",
                     **{k: round(v, 5) for k, v in stats.items()}, "lr": lr, "time_s": round(now, 2)})
        out_of_time = bool(tc.max_time) and now >= tc.max_time
        last = step == tc.max_iters or out_of_time
        if step % tc.eval_interval == 0 or last:
            v = vocoder_val_loss(voc.G, val, max(tc.eval_iters * 4, 4))
            improved = v < best
            if improved:
                best = v
                digest = save_weights(voc.G, run_dir / "vocoder.safetensors")
            log.log({"part": "vocoder", "step": step, "split": "vocoder_val", "mel_l1": round(v, 5),
                     "best": round(best, 5), "time_s": round(now, 2)})
            say(f"vocoder step {step}: held-out mel L1 {v:.4f}{' (best)' if improved else ''}")
            if out_of_time:
                stopped = f"max_time: {tc.max_time:g} s budget spent"
            checkpoint()
            _write_run_info(run_dir, ds, preset, "vocoder", mcfg, tc, lc, {
                "best_val_mel_l1": best, "step": step, "train_time_s": round(now, 2),
                **({"stopped": stopped} if stopped else {})}, digest)
            if stopped:
                break
        elif autosave.due(step):  # between evaluations: every checkpoint_every seconds, or a signal
            checkpoint()
        if autosave.stopping:
            break
    log.close()


# ---- the run directory -----------------------------------------------------------------------------


def _write_run_info(run_dir: Path, ds: SpeechDataset, preset: str, part: str, mcfg: Any, tc: TrainConfig,
                    lc: VocoderLoss | None, metrics: dict[str, Any], digest: str) -> None:
    """Merge one part's record into ``gencraft.json`` and rewrite the model card."""
    p = run_dir / "gencraft.json"
    info = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {
        "kind": KIND, "run_id": new_run_id(), "created": now_iso(), "name": run_dir.name, "preset": preset}
    m = ds.manifest
    info.update({
        "speaker": m.get("speaker"), "license": m.get("license"),
        "tokenizer": {"kind": "phonemes", "vocab_size": ds.tokenizer.vocab_size, "languages": ds.tokenizer.languages},
        "audio": m.get("audio"),
        "data": {"dataset": str(ds.path.resolve()), "manifest_digest": m.get("digest", ""),
                 "sources": [{"path": s.get("path"), "sha256": s.get("sha256"), "license": s.get("license")}
                             for s in m.get("sources", [])]},
    })
    info.setdefault("model", {})[part] = asdict(mcfg)
    info.setdefault("train", {})[part] = {**asdict(tc), **(asdict(lc) if lc else {})}
    info.setdefault("metrics", {})[part] = metrics
    info.setdefault("parts", {})[part] = {"file": "model.safetensors" if part == "acoustic" else "vocoder.safetensors",
                                          "digest": digest}
    info["model_digest"] = info["parts"].get("acoustic", {}).get("digest")
    info["vocoder_digest"] = info["parts"].get("vocoder", {}).get("digest")
    write_info(run_dir, info)
    write_text(run_dir / "MODEL_CARD.md", speech_model_card({**info, "gencraft_version": __version__}))


def speech_model_card(info: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` of a voice: whose voice, under which license, how well, how to use it."""
    metrics, parts = info.get("metrics", {}), info.get("parts", {})
    data = info.get("data", {})
    lines = [
        f"# Voice: {info.get('speaker') or 'unnamed speaker'}", "",
        f"A text-to-speech voice trained with gencraft {info.get('gencraft_version', '')} "
        f"(run `{info.get('run_id')}`, created {info.get('created')}).", "",
        "## Speaker and license", "",
        f"- Speaker: **{info.get('speaker')}**",
        f"- License of the recordings: **{info.get('license')}** (it binds everything this voice says)",
        f"- Recordings: {len(data.get('sources', []))} files of dataset `{data.get('dataset')}` "
        f"(manifest digest `{data.get('manifest_digest')}`); sha256 of each in `data_manifest.json`",
        f"- Languages: {', '.join(info.get('tokenizer', {}).get('languages', [])) or '?'}", "",
        "## Parts", "",
        "| part | weights | metrics |", "| --- | --- | --- |",
    ]
    for p in PARTS:
        if p in parts:
            mm = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.get(p, {}).items())
            lines.append(f"| {p} | `{parts[p]['file']}` (sha256 `{str(parts[p]['digest'])[:16]}…`) | {mm} |")
        else:
            lines.append(f"| {p} | not trained (speech falls back to Griffin-Lim) | |" if p == "vocoder"
                         else f"| {p} | not trained | |")
    lines += ["", "## Model", ""]
    for p, cfg in info.get("model", {}).items():
        lines.append(f"- {p}: " + ", ".join(f"{k}={v}" for k, v in cfg.items()))
    lines += [
        "", "## Intended use", "",
        f"Voice-overs, game dialogue and narration in the voice of {info.get('speaker')}, with their consent "
        "and within the license above: `gencraft speak RUN \"text\" --out line.wav`. Every file gencraft writes "
        "carries a keyed watermark and a signed manifest naming this voice.", "",
        "## Limitations", "",
        "- A small model trained on little data: it can mispronounce rare words and names, and sounds less "
        "natural than the recordings.",
        "- It only knows the phonemes of its recordings' language(s).",
        "- Do not use it to impersonate the speaker or to deceive listeners.", "",
    ]
    return "\n".join(lines)

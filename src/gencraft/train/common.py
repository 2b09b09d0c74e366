"""Pieces every training loop shares: device and bf16 choice, seeding, the run directory's
dataset files, refusing to overwrite a run, and the progress bar."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from gencraft.data.dataset import tokens_seen
from gencraft.errors import ConfigError, GencraftError, TrainingDiverged, UsageError
from gencraft.io import atomic_path, write_bytes
from gencraft.limits import fmt_bytes, require_memory
from gencraft.models import build
from gencraft.runs import SEEN_FILE, run_status
from gencraft.train.checkpoint import CHECKPOINT, read_checkpoint_state
from gencraft.train.config import TrainConfig
from gencraft.train.data import Dataset


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 dot products (avx512_bf16 or AMX), where bf16 autocast can pay."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(name: str) -> torch.device:
    """The device a training loop runs on: ``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise UsageError(f"--device {name}: expected auto, cpu, cuda or cuda:N", param="device")
    if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is available; use --device cpu", param="device")
        return torch.device("cuda" if name == "auto" else name)
    return torch.device("cpu")


def use_bf16(tc: TrainConfig, device: torch.device, kind: str) -> bool:
    """bf16 autocast: on request, or by default on CUDA; on CPU only where it measurably helps.

    Measured on this project's 2-core avx512_bf16 CPU (bench/RESULTS.md): see CPU_BF16_AUTO.
    """
    if tc.dtype == "float32":
        return False
    if tc.dtype == "bfloat16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return CPU_BF16_AUTO.get(kind, False) and cpu_has_bf16()


# Whether dtype=auto turns on bf16 autocast on a CPU with avx512_bf16, per model kind: set from the
# A/B measurements in bench/RESULTS.md (small shapes are bound by overheads, not matmuls).
CPU_BF16_AUTO: dict[str, bool] = {"gpt": True, "lstm": True}


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def dataset_record(ds: Dataset) -> dict[str, Any]:
    """The run's ``data`` field: dataset path, manifest digest, sources with their licenses."""
    return {
        "dataset": str(ds.path.resolve()),
        "manifest_digest": ds.manifest.get("digest", ""),
        "sources": [{"path": s.get("path"), "sha256": s.get("sha256"), "license": s.get("license", "unknown")}
                    for s in ds.manifest.get("sources", [])],
    }


def check_training_memory(kind: str, mcfg: Any, *, batch: int, positions: int, width: int, depth: int,
                          vocab: int = 0, frozen: bool = False) -> int:
    """Refuse, before anything is allocated, a model and batch that cannot fit in this machine's memory.

    The parameters are counted on PyTorch's ``meta`` device (shapes only, no storage); training holds
    them four times (weights, gradients, AdamW's two moments), a frozen base under adapters
    (``frozen``: LoRA) once, and a batch's activations are estimated as
    ``batch x positions x (24 x width x depth + 3 x vocab)`` float32 values (the per-layer tensors
    autograd keeps, and the logits with their softmax and gradient). A Hugging Face base (``hf``) is
    counted the same way, from its ``config.json``, before its weights are read. Returns the
    parameter count.
    """
    try:
        with torch.device("meta"):
            n = sum(p.numel() for p in build(kind, mcfg).parameters())
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as e:  # a base's config.json
        raise ConfigError(f"the {kind} model cannot be built from its config ({str(e).splitlines()[0][:200]})",
                          param="model") from None
    weights = (4 if frozen else 16) * n
    activations = 4 * batch * positions * (24 * width * depth + 3 * vocab)
    size = ("--from (a smaller base model), or --lora" if kind == "hf" and not frozen else
            "--from (a smaller base model)" if kind == "hf" else "--set n_layer/n_embd (the model's size)")
    param = size if weights >= activations else "--set batch_size/block_size"
    require_memory(weights + activations, f"training a {kind} of {n / 1e6:,.1f}M parameters "
                   f"({fmt_bytes(weights)} with its optimizer) on batches of {batch} x {positions}", param)
    return n


def diverged_error(run_dir: Path, step: int, why: str) -> TrainingDiverged:
    """The error of a diverged run: what went wrong and what is left to resume from (if anything)."""
    try:
        last = read_checkpoint_state(run_dir).get("step")
    except GencraftError:
        last = None
    kept = (f"the last good checkpoint (step {last}) in {run_dir / CHECKPOINT} is kept: lower the learning rate "
            "(--set learning_rate=...) and --resume" if last is not None else
            "no checkpoint had been written yet: start again with a lower learning rate (--set learning_rate=...)")
    return TrainingDiverged(f"training diverged at step {step} ({why}); {kept}", param="learning_rate")


def refuse_existing_run(run_dir: Path, resume: bool) -> None:
    """A new run never overwrites another one; ``--resume`` continues it instead; a run whose
    process is alive is never trained by a second one."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir}: is a file, not a run folder; choose another --out", param="out")
    status = run_status(run_dir)
    if status["state"] == "training":
        raise UsageError(f"{run_dir}: process {status.get('pid')} is training this run now; wait for it, "
                         "stop it (Ctrl-C), or choose another --out", param="out")
    if not resume and ((run_dir / "gencraft.json").exists() or (run_dir / CHECKPOINT).exists()):
        raise UsageError(f"{run_dir}: a run already exists there; continue it with --resume, or choose "
                         "another --out (or delete the folder)", param="out")


def copy_dataset_files(run_dir: Path, ds: Dataset, base_seen: np.ndarray | None = None) -> None:
    """Give the run its dataset's tokenizer and manifest (sources and licenses travel with it), and
    which token ids its training data holds (``tokens_seen.npy``: generation keeps unseen ones away).
    A run fine-tuned from a base has seen what its base saw too (``base_seen``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(run_dir / "tokenizer.json", (ds.path / "tokenizer.json").read_bytes())
    write_bytes(run_dir / "data_manifest.json", (ds.path / "manifest.json").read_bytes())
    seen = tokens_seen(ds.train, ds.vocab_size)
    if base_seen is not None:
        n = min(len(base_seen), len(seen))
        seen[:n] |= base_seen[:n]
    with atomic_path(run_dir / SEEN_FILE) as tmp, open(tmp, "wb") as f:
        np.save(f, seen, allow_pickle=False)


class Progress:
    """A rich progress bar with the loss, tokens/s and ETA (nothing at all when disabled)."""

    def __init__(self, enabled: bool, total: int, completed: int) -> None:
        self.enabled = enabled
        if not enabled:
            return
        self.p = RichProgress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                          TextColumn("ETA"), TimeRemainingColumn(),
                          console=Console(stderr=True, highlight=False), transient=False)
        self.task = self.p.add_task("train", total=total, completed=completed, loss="-", tps="-")
        self.p.start()

    def update(self, step: int, loss: float, tps: float) -> None:
        if self.enabled:
            self.p.update(self.task, completed=step, loss=f"{loss:.4f}", tps=f"{tps:,.0f}")

    def log(self, line: str) -> None:
        if self.enabled:
            self.p.console.print(line)

    def close(self) -> None:
        if self.enabled:
            self.p.stop()

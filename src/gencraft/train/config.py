"""Training configuration and presets.

Model shapes live with the models (``gencraft.models.gpt.PRESETS``...); what it takes to train
them (batch size, learning rate, schedule, evaluation cadence) lives here, per model kind and
preset. :func:`resolve` combines the two and applies ``--set key=value`` overrides to both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from gencraft.config import Limit, Range, apply_overrides, validate
from gencraft.errors import ConfigError, UsageError
from gencraft.models import config_class, presets


@dataclass
class TrainConfig:
    batch_size: int = 16  # sequences per micro-batch (per process under torchrun)
    grad_accum: int = 1  # micro-batches per optimizer step
    learning_rate: float = 1e-3
    min_lr: float = 1e-4  # the cosine schedule decays to this
    warmup_iters: int = 100  # linear warmup from ~0 to learning_rate
    max_iters: int = 2000  # optimizer steps
    lr_decay_iters: int = 0  # where the cosine reaches min_lr; 0 = max_iters
    weight_decay: float = 0.1  # on matrices only (not norms, biases, embeddings)
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # clip the global gradient norm; 0 = off
    eval_interval: int = 250  # steps between evaluations on the validation split
    eval_iters: int = 50  # batches per evaluation
    patience: int = 0  # stop after this many evaluations without improvement; 0 = never
    checkpoint_interval: int = 0  # steps between checkpoints/last; 0 = every evaluation
    checkpoint_every: float = 300.0  # seconds between checkpoints/last too (whichever comes first); 0 = off
    log_interval: int = 10  # steps between progress updates (each one reads the loss off the device)
    compile: bool = False  # torch.compile the model (worth it for long runs; costs start-up time)
    dtype: str = "auto"  # auto | float32 | bfloat16 (autocast; auto = bf16 on CUDA and on CPUs with avx512_bf16)
    seed: int = 1337
    max_time: float = 0.0  # wall-clock budget in seconds; 0 = none. The lr schedule follows it too.
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int = 0  # torch CPU threads; 0 = all cores (divided among local torchrun processes)
    parallel: str = "auto"  # CPU threads: rows (each thread a share of the batch, end to end) | ops | auto (train/rows.py)

    STEPS: ClassVar[Range] = Range(1, 10**9)
    LIMITS: ClassVar[dict[str, Limit]] = {
        "batch_size": Range(1, 1 << 16), "grad_accum": Range(1, 1 << 12),
        "learning_rate": Range(0, 1000), "min_lr": Range(0, 1000), "warmup_iters": Range(0, 10**9),
        "max_iters": STEPS, "lr_decay_iters": Range(0, 10**9), "weight_decay": Range(0, 10),
        "beta1": Range(0, 1, hi_open=True), "beta2": Range(0, 1, hi_open=True), "grad_clip": Range(0, 1e6),
        "eval_interval": STEPS, "eval_iters": Range(1, 100_000), "patience": Range(0, 10**6),
        "checkpoint_interval": Range(0, 10**9), "checkpoint_every": Range(0, 10**7), "log_interval": STEPS,
        "dtype": ("auto", "float32", "bfloat16"), "seed": Range(0, 2**63 - 1), "max_time": Range(0, 10**9),
        "device": ("auto", "cpu", "cuda"), "num_threads": Range(0, 1024),
        "parallel": ("auto", "rows", "ops"),
    }


# Training presets per (model kind, preset). The `small` ones are tuned on tinyshakespeare to beat
# nanoGPT's CPU figure within 5 minutes on 2 cores (see bench/train_shakespeare.py).
TRAIN_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "gpt": {
        "tiny": dict(batch_size=16, learning_rate=2e-3, min_lr=2e-4, warmup_iters=20, max_iters=300,
                     eval_interval=100, eval_iters=10, weight_decay=0.1),
        "small": dict(batch_size=16, learning_rate=2e-3, min_lr=1e-4, warmup_iters=100, max_iters=2800,
                      eval_interval=250, eval_iters=20, weight_decay=0.1, beta2=0.99),
        "base": dict(batch_size=32, learning_rate=6e-4, min_lr=6e-5, warmup_iters=200, max_iters=5000,
                     eval_interval=500, eval_iters=50, weight_decay=0.1, beta2=0.99),
    },
    "lstm": {
        "tiny": dict(batch_size=16, learning_rate=3e-3, min_lr=3e-4, warmup_iters=20, max_iters=300,
                     eval_interval=100, eval_iters=10, weight_decay=0.0),
        "small": dict(batch_size=32, learning_rate=3e-3, min_lr=1e-4, warmup_iters=50, max_iters=2500,
                      eval_interval=250, eval_iters=20, weight_decay=0.0),
        "base": dict(batch_size=32, learning_rate=2e-3, min_lr=1e-4, warmup_iters=100, max_iters=5000,
                     eval_interval=500, eval_iters=50, weight_decay=0.0),
    },
}

# model fields set per preset beyond the shape (regularization belongs to the preset)
MODEL_PRESET_EXTRAS: dict[str, dict[str, dict[str, Any]]] = {
    "gpt": {"tiny": dict(dropout=0.0), "small": dict(dropout=0.0), "base": dict(dropout=0.1)},
    # untied LSTM embeddings learn much faster at these sizes (see the init note in models/lstm.py)
    "lstm": {"tiny": dict(dropout=0.0, tie_weights=False), "small": dict(dropout=0.1, tie_weights=False),
             "base": dict(dropout=0.2, tie_weights=False)},
}

def check(tc: TrainConfig) -> None:
    """Reject values that are the wrong type, not finite or out of range, naming the field."""
    validate(tc)


def resolve(kind: str, preset: str, vocab_size: int, overrides: list[str] | dict[str, str] | None = None,
            ) -> tuple[Any, TrainConfig]:
    """The model config and training config for ``kind``/``preset`` with ``key=value`` overrides."""
    if kind not in TRAIN_PRESETS:
        raise UsageError(f"--model {kind}: unknown model kind; expected one of {', '.join(TRAIN_PRESETS)}",
                         param="model")
    if preset not in TRAIN_PRESETS[kind]:
        raise UsageError(f"--preset {preset}: unknown preset; expected one of {', '.join(TRAIN_PRESETS[kind])}",
                         param="preset")
    mcfg = config_class(kind)(vocab_size=vocab_size, **presets(kind)[preset],
                              **MODEL_PRESET_EXTRAS[kind][preset])
    tcfg = TrainConfig(**TRAIN_PRESETS[kind][preset])
    mcfg, tcfg = apply_overrides([mcfg, tcfg], overrides)
    check(tcfg)
    check_model(kind, mcfg)
    return mcfg, tcfg


def check_model(kind: str, mcfg: Any) -> None:
    """Reject model shapes that cannot be built, naming the field (ranges: the config's LIMITS)."""
    if kind == "hf":  # the shape is the Hugging Face config's; only the training window is ours
        for name in ("block_size", "vocab_size"):
            if getattr(mcfg, name) < 1:
                raise ConfigError(f"--set {name}={getattr(mcfg, name)}: must be at least 1", param=name)
        return
    validate(mcfg)
    if kind == "gpt" and mcfg.n_embd % mcfg.n_head:
        raise ConfigError(f"--set n_embd={mcfg.n_embd}: must be a multiple of n_head={mcfg.n_head}", param="n_embd")

"""The cost of checking a run's weights against its recorded digest on every load, at 124M parameters,
and the cost of one resumable checkpoint (which sets the default of ``--checkpoint-every``).

Loads a GPT-2-small-shaped run (124M parameters, float32, ~500 MB of safetensors) four ways, taking
turns, and prints each beside the plain load it is compared to:

- ``unchecked``: ``gencraft.runs.load_weights(model, path)`` (what loading did before the check:
  ``safetensors`` maps the file, the tensors go into the model)
- ``checked``: ``load_weights(model, path, digest=...)``, what every run load does now: sha256 the
  file in 1 MB chunks, compare, then map it (from the page cache) and load the tensors
- ``checked, read once``: the first version of the check (read the whole file into memory, hash
  those bytes, parse the tensors from them): one more copy of the weights in memory, and slower
- ``sha256 alone``: hashing bytes already in memory (the part the check adds)

Then one AdamW step (so the optimizer holds its two moments) and ``save_checkpoint`` of the model and
optimizer (what a time-based checkpoint writes: ``checkpoints/last``, fsynced, renamed into place),
printed as seconds and as the share of a 300 s interval it costs.

Usage: flock /tmp/gencraft-bench.lock .venv/bin/python bench/integrity.py [--reps 5]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from gencraft.models.gpt import GPT, GPTConfig  # noqa: E402
from gencraft.runs import load_weights, save_weights  # noqa: E402


def load_read_once(model: torch.nn.Module, path: Path, digest: str) -> None:
    """The check's first version: one read into memory, hash those bytes, parse the tensors from them."""
    from safetensors.torch import load

    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest
    model.load_state_dict(load(data), strict=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        cfg = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
        model = GPT(cfg)
        path = Path(d) / "model.safetensors"
        digest = save_weights(model, path)
        n = sum(p.numel() for p in model.parameters())
        size = path.stat().st_size
        data = path.read_bytes()
        times: dict[str, list[float]] = {"unchecked load_weights": [], "checked load_weights (digest=...)": [],
                                         "checked, read once (the first version)": [],
                                         "sha256 alone (bytes in memory)": []}
        for _ in range(args.reps):
            t = time.perf_counter()
            load_weights(model, path)
            times["unchecked load_weights"].append(time.perf_counter() - t)
            t = time.perf_counter()
            load_weights(model, path, digest=digest)
            times["checked load_weights (digest=...)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            load_read_once(model, path, digest)
            times["checked, read once (the first version)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            hashlib.sha256(data).hexdigest()
            times["sha256 alone (bytes in memory)"].append(time.perf_counter() - t)
        print(f"124M GPT ({n:,} parameters), model.safetensors {size / 1e6:.0f} MB, {args.reps} rounds taking turns")
        for name, ts in times.items():
            print(f"  {name:<40} median {statistics.median(ts) * 1e3:8.1f} ms   "
                  f"range {min(ts) * 1e3:.1f}-{max(ts) * 1e3:.1f} ms")
        from gencraft.train.checkpoint import save_checkpoint
        from gencraft.train.config import TrainConfig
        from gencraft.train.optim import make_optimizer

        opt = make_optimizer(model, TrainConfig(), "cpu")
        x = torch.randint(0, cfg.vocab_size, (1, 64))
        model(x, x)[1].backward()
        opt.step()
        gen = torch.Generator()
        saves = []
        for _ in range(max(args.reps // 2, 2)):
            t = time.perf_counter()
            save_checkpoint(Path(d), model, opt, gen, {"step": 1})
            saves.append(time.perf_counter() - t)
        ck = sum(f.stat().st_size for f in (Path(d) / "checkpoints" / "last").iterdir())
        med = statistics.median(saves)
        print(f"  {'save_checkpoint (model + AdamW)':<40} median {med * 1e3:8.1f} ms   range {min(saves) * 1e3:.1f}-"
              f"{max(saves) * 1e3:.1f} ms   ({ck / 1e9:.2f} GB; {100 * med / 300:.2f}% of a 300 s interval)")


if __name__ == "__main__":
    main()

"""The resumable checkpoint ``checkpoints/last/``: model, optimizer, step, schedule and RNG states.

A model that trains only some of its weights (LoRA adapters on a frozen base) checkpoints only those
(``trainable_only``; ``state.json`` says ``"weights": "trainable"``): the frozen rest comes back from
where it came from (the base run, whose sha256 the caller checks), so a checkpoint of an adapter is
the adapter's size, not the model's.

Everything is safetensors + JSON (no pickle): optimizer tensors are flattened into
``optimizer.safetensors`` under ``state.{param}.{name}`` keys, everything else (param groups,
step, best loss, RNG states as base64) goes to ``state.json``. The directory is built under a
temporary name and renamed into place, so a kill at any moment leaves the previous checkpoint.
"""

from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gencraft.errors import RunError
from gencraft.io import atomic_dir, recover_dir
from gencraft.runs import load_weights, state_dict_for_save
from gencraft.schemas import CheckpointState, read_json

CHECKPOINT = Path("checkpoints") / "last"


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    """Python, numpy, torch (CPU and CUDA) and the data generator's RNG states, JSON-ready."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": _b64(torch.get_rng_state()),
        "data": _b64(gen.get_state()),
    }
    if torch.cuda.is_available():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    gen.set_state(_unb64(state["data"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and plain JSON structure."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    structure: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        entry: dict[str, Any] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{pid}.{k}"] = v.detach().cpu().contiguous()
                entry[k] = {"tensor": f"state.{pid}.{k}"}
            else:
                entry[k] = v
        structure["state"][str(pid)] = entry
    return tensors, structure


def unflatten_optimizer(tensors: dict[str, torch.Tensor], structure: dict[str, Any]) -> dict[str, Any]:
    state = {}
    for pid, entry in structure["state"].items():
        state[int(pid)] = {k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
                           for k, v in entry.items()}
    return {"state": state, "param_groups": structure["param_groups"]}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of ``model``'s parameters that train (``requires_grad``), on the CPU."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(run_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    gen: torch.Generator, state: dict[str, Any], *, trainable_only: bool = False) -> None:
    """Write ``run_dir/checkpoints/last`` atomically (a whole new directory renamed into place);
    ``trainable_only``: only the parameters that train (the model's frozen rest is not written)."""
    tensors, structure = flatten_optimizer(opt)
    with atomic_dir(run_dir / CHECKPOINT) as tmp:
        weights = trainable_state(model) if trainable_only else state_dict_for_save(model)
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={"format": "pt"})
        full = {**state, "weights": "trainable" if trainable_only else "all", "optimizer": structure,
                "rng": rng_state(gen)}
        (tmp / "state.json").write_text(json.dumps(full), encoding="utf-8")
        for name in ("model.safetensors", "optimizer.safetensors", "state.json"):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())


def read_checkpoint_state(run_dir: Path) -> dict[str, Any]:
    """The ``state.json`` of the last checkpoint; a missing or broken one is a RunError."""
    recover_dir(run_dir / CHECKPOINT)  # a kill in the middle of replacing it leaves the previous one aside
    f = run_dir / CHECKPOINT / "state.json"
    if not f.is_file():
        raise RunError(f"{f}: no checkpoint to resume from; train without --resume to start this run")
    return read_json(f, CheckpointState, hint="the checkpoint is corrupted; start the run again")


def load_checkpoint(run_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    gen: torch.Generator, state: dict[str, Any]) -> None:
    """Restore model, optimizer and RNG states from ``run_dir/checkpoints/last`` (a ``trainable`` checkpoint:
    into a model whose frozen weights are already loaded)."""
    ck = run_dir / CHECKPOINT
    if state.get("weights") == "trainable":
        _load_trainable(model, ck / "model.safetensors")
    else:
        load_weights(model, ck / "model.safetensors")
    try:
        tensors = load_file(str(ck / "optimizer.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{ck / 'optimizer.safetensors'}: cannot read ({e}); the checkpoint is corrupted") from None
    try:
        opt.load_state_dict(unflatten_optimizer(tensors, state["optimizer"]))
    except (KeyError, ValueError) as e:
        raise RunError(f"{ck / 'state.json'}: optimizer state does not match the model ({e})") from None
    set_rng_state(state["rng"], gen)


def _load_trainable(model: torch.nn.Module, path: Path) -> None:
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{path}: cannot read weights ({e}); the checkpoint is corrupted") from None
    want = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != want:
        odd = sorted(set(tensors) ^ want)[:3]
        raise RunError(f"{path}: the checkpoint's trained tensors do not match the model ({odd}); it belongs to "
                       "another run")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in tensors.items():
            if params[n].shape != t.shape:
                raise RunError(f"{path}: {n} is {tuple(t.shape)} in the checkpoint, {tuple(params[n].shape)} in the model")
            params[n].copy_(t)

"""LoRA adapters: which layers, training them on a base, saving them as a small run, loading them back.

An adapter run is a run directory without full weights (docs/architecture.md, "Adapter runs"):
``gencraft.json`` (``kind`` = the base's family, ``"base"``: path + sha256 of its weights,
``"adapter"``: rank, alpha, targets, the adapted layers), the adapter's tensors, the tokenizer,
the data manifest, metrics and model card.

- Hugging Face bases: ``peft`` (the field's format): ``adapter_config.json`` +
  ``adapter_model.safetensors``, which ``peft.PeftModel.from_pretrained(base, RUN)`` loads as it is.
- gencraft GPT and LSTM: gencraft's own layers (:mod:`gencraft.models.lora`, which says why) and
  ``adapter.safetensors`` with ``peft``'s tensor names (``NAME.lora_A.weight``, ``NAME.lora_B.weight``).

Loading checks the base first: missing, or weights whose sha256 is not the recorded one, is a
one-line error; an adapter applied to other weights would give garbage without saying so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gencraft.config import apply_overrides, from_dict
from gencraft.errors import ConfigError, NotFoundError, RunError, UsageError
from gencraft.io import atomic_path
from gencraft.models import build, config_class
from gencraft.models import lora as L
from gencraft.models.hf import HFCausalLM, HFConfig
from gencraft.runs import load_weights, sha256_file


@dataclass
class LoRAConfig:
    r: int = 8  # rank of the update
    alpha: float = 16.0  # the update is scaled by alpha / r
    # on the adapted layers' input (not for the LSTM's matrices); 0 as in peft: a personal corpus is fitted in a few
    # hundred steps, where dropout only slows the fit (bench/RESULTS.md, "Personalization")
    dropout: float = 0.0
    targets: list[str] = field(default_factory=list)  # attn, mlp (transformers); lstm, proj (LSTM); [] = default


def weights_digest(files: list[Path]) -> str:
    """sha256 of one weights file; for several (shards), of their names and digests in order."""
    if len(files) == 1:
        return sha256_file(files[0])
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f"{f.name}:{sha256_file(f)}\n".encode())
    return h.hexdigest()


def hf_weight_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.glob("*.safetensors") if not f.name.startswith(("adapter", ".")))




GENCRAFT_FILE = "adapter.safetensors"
PEFT_FILE = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"

# target names per family: which layers each one adapts
TARGETS = {"gpt": ("attn", "mlp"), "lstm": ("lstm", "proj"), "hf": ("attn", "mlp")}
DEFAULT_TARGETS = {"gpt": ["attn", "mlp"], "lstm": ["lstm"], "hf": ["attn", "mlp"]}


def resolve_config(items: dict[str, str]) -> LoRAConfig:
    """``lora.*`` overrides -> a checked :class:`LoRAConfig` (``items`` without the ``lora.`` prefix)."""
    try:
        (cfg,) = apply_overrides([LoRAConfig()], items)
    except ConfigError as e:  # name the key as the user wrote it
        msg = str(e).replace("--set ", "--set lora.", 1).replace("valid keys are ", "valid keys are lora.")
        raise ConfigError(msg.replace(", ", ", lora.") if "valid keys" in msg else msg,
                          param=f"lora.{e.param}" if e.param else None) from None
    if cfg.r < 1:
        raise ConfigError(f"--set lora.r={cfg.r}: the rank must be at least 1", param="lora.r")
    if not cfg.alpha > 0:
        raise ConfigError(f"--set lora.alpha={cfg.alpha}: must be positive", param="lora.alpha")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"--set lora.dropout={cfg.dropout}: must be in [0, 1)", param="lora.dropout")
    cfg.targets = [str(t).strip() for t in cfg.targets if str(t).strip()]
    return cfg


def _hf_layers(hf: nn.Module) -> dict[str, nn.Module]:
    """A transformers model's linear layers (``nn.Linear`` and GPT-2's ``Conv1D``), output layer excluded."""
    out = {}
    for name, m in hf.named_modules():
        if (isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D") and m is not hf.get_output_embeddings():
            out[name] = m
    return out


def _group(name: str) -> str | None:
    """``attn`` or ``mlp`` for a transformer layer's qualified name (``None``: neither)."""
    parts = name.split(".")
    if any("attn" in p or "attention" in p for p in parts):
        return "attn"
    if any(p in ("mlp", "feed_forward", "ffn") for p in parts) or parts[-1] in ("fc1", "fc2"):
        return "mlp"
    return None


def _dims(m: nn.Module) -> tuple[int, int]:
    """(in, out) of a linear layer; GPT-2's Conv1D keeps its weight as ``[in, out]``."""
    w = m.weight
    return (w.shape[0], w.shape[1]) if type(m).__name__ == "Conv1D" else (w.shape[1], w.shape[0])


def select(model: nn.Module, kind: str, cfg: LoRAConfig) -> list[str]:
    """The qualified names of the layers ``cfg.targets`` picks in ``model``; checks the rank against them."""
    targets = cfg.targets or DEFAULT_TARGETS[kind]
    bad = [t for t in targets if t not in TARGETS[kind]]
    if bad:
        raise ConfigError(f"--set lora.targets={','.join(targets)}: a {kind} model has no {bad[0]!r} layers; "
                          f"expected some of {', '.join(TARGETS[kind])}", param="lora.targets")
    names: dict[str, tuple[int, ...]] = {}
    if kind == "gpt":
        for name, m in model.named_modules():
            leaf = name.split(".")[-2:]
            if isinstance(m, nn.Linear) and leaf[0] in targets and leaf[0] in ("attn", "mlp"):
                names[name] = _dims(m)
    elif kind == "lstm":
        if "lstm" in targets:
            names["lstm"] = tuple(min(w.shape) for n, w in model.lstm.named_parameters() if n.startswith("weight_"))
        if "proj" in targets:
            if not isinstance(model.proj, nn.Linear):
                raise UsageError("--set lora.targets=proj: this LSTM has no projection layer (n_hidden == "
                                 "n_embd); adapt lstm", param="lora.targets")
            names["proj"] = _dims(model.proj)
    else:
        for name, m in _hf_layers(model.hf).items():
            if _group(name) in targets:
                names[name] = _dims(m)
    if not names:
        raise UsageError(f"--lora: the {kind} base has no linear layers LoRA can adapt for targets "
                         f"{','.join(targets)}", param="lora.targets")
    name, dims = min(names.items(), key=lambda kv: min(kv[1]))
    if cfg.r > min(dims):
        raise ConfigError(f"--set lora.r={cfg.r}: larger than layer {name} ({' x '.join(map(str, dims))}); "
                          f"the rank can be at most {min(dims)}", param="lora.r")
    return list(names)


def attach(model: nn.Module, kind: str, cfg: LoRAConfig, modules: list[str] | None = None) -> list[str]:
    """Freeze ``model`` and put fresh adapters on ``modules`` (default: :func:`select`); returns the names."""
    names = modules or select(model, kind, cfg)
    if kind != "hf":
        return L.inject(model, names, cfg.r, cfg.alpha, cfg.dropout)
    from peft import LoraConfig, get_peft_model

    layers = _hf_layers(model.hf)
    conv1d = any(type(layers[n]).__name__ == "Conv1D" for n in names)
    pcfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(names),
                      bias="none", task_type="CAUSAL_LM", fan_in_fan_out=conv1d)
    with _quiet_peft():
        model.hf = get_peft_model(model.hf, pcfg)
    return list(names)


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft asks transformers a deprecated question (``is_gradient_checkpointing``): not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def adapter_record(tune: Any) -> dict[str, Any]:
    """The ``adapter`` entry of an adapter run's ``gencraft.json``."""
    c = tune.lora
    assert c is not None
    return {"method": "lora", "format": "peft" if tune.kind == "hf" else "gencraft",
            "file": PEFT_FILE if tune.kind == "hf" else GENCRAFT_FILE, "r": c.r, "alpha": c.alpha,
            "dropout": c.dropout, "targets": c.targets or DEFAULT_TARGETS[tune.kind], "modules": tune.modules,
            **({"objective": "dpo", "beta": tune.beta, "sft": tune.sft, "budget": tune.budget}
               if tune.objective == "dpo" else {})}


def save_adapter(model: nn.Module, run_dir: Path, tune: Any) -> str:
    """Write the adapter's tensors (and ``peft``'s config for a Hugging Face base); returns their sha256."""
    if tune.kind != "hf":
        with atomic_path(run_dir / GENCRAFT_FILE) as tmp:
            save_file(L.adapter_state_dict(model), str(tmp), metadata={"format": "pt"})
        return sha256_file(run_dir / GENCRAFT_FILE)
    from peft import get_peft_model_state_dict

    pm = model.hf
    pm.peft_config["default"].base_model_name_or_path = str(tune.base.path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(pm).items()}
    with atomic_path(run_dir / PEFT_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmpdir = Path(tempfile.mkdtemp(prefix=".adapter-config.", dir=run_dir))
    try:  # peft writes the config file itself (its own JSON encoding of the dataclass)
        pm.peft_config["default"].save_pretrained(str(tmpdir))
        os.replace(tmpdir / PEFT_CONFIG, run_dir / PEFT_CONFIG)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return sha256_file(run_dir / PEFT_FILE)


# ---- loading adapter runs (and fine-tuned Hugging Face runs) back ----

_verified: dict[tuple[str, int, int], str] = {}  # (file, size, mtime_ns) -> sha256, per process


def _digest(files: list[Path]) -> str:
    key = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    hit = _verified.get(key)  # type: ignore[arg-type]
    if hit is None:
        hit = _verified[key] = weights_digest(files)  # type: ignore[index]
    return hit


def verify_base(run_dir: Path, info: dict[str, Any]) -> Path:
    """The adapter's base folder, after checking it is there with the very weights it was trained on."""
    b = info.get("base") or {}
    if not b.get("path") or not b.get("sha256"):
        raise RunError(f"{run_dir / 'gencraft.json'}: an adapter run without its base reference (base.path, "
                       "base.sha256); train the adapter again", param="model")
    p = Path(b["path"])
    files = [p / f for f in b.get("files") or []] or hf_weight_files(p)
    missing = next((f for f in files if not f.is_file()), None) if p.is_dir() else p
    if missing is not None or not files:
        raise NotFoundError(f"adapter {run_dir}: its base {b.get('spec', p)} is missing ({missing or p}); put "
                            "the base back there or train the adapter again on another base", param="model")
    digest = _digest(files)
    if digest != b["sha256"]:
        raise RunError(f"adapter {run_dir}: its base {p} has changed since the adapter was trained (weights "
                       f"sha256 {digest[:12]}..., recorded {b['sha256'][:12]}...); an adapter fits only the "
                       "weights it was trained on: restore them or train the adapter again", param="model")
    return p


def read_adapter(run_dir: Path, info: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The adapter's tensors; a missing or corrupted file is a RunError."""
    f = run_dir / (info.get("adapter") or {}).get("file", GENCRAFT_FILE)
    if not f.is_file():
        raise RunError(f"{f}: missing; the adapter run is incomplete (train it again or --resume)", param="model")
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{f}: cannot read the adapter ({e}); the file is corrupted", param="model") from None


def load_model(run_dir: Path, info: dict[str, Any], *, merge: bool = True) -> nn.Module:
    """An adapter run (base + adapter; merged into the weights unless ``merge=False``), or a fine-tuned
    Hugging Face run, as a training-style model (``forward(idx, targets)``)."""
    kind, ad = info["kind"], info.get("adapter")
    if kind == "hf" and not ad:
        return HFCausalLM(from_dict(HFConfig, info.get("model", {})), load_from=run_dir)
    base = verify_base(run_dir, info)
    cfg = from_dict(LoRAConfig, {"r": ad.get("r", 8), "alpha": ad.get("alpha", 16.0), "dropout": 0.0,
                                 "targets": ad.get("targets", [])})
    if kind == "hf":
        model = HFCausalLM(from_dict(HFConfig, info.get("model", {})), load_from=base)
        model.hf = peft_attach(model.hf, run_dir, merge)
        return model
    model = build(kind, from_dict(config_class(kind), info.get("model", {})))
    load_weights(model, base / info["base"]["files"][0])
    L.inject(model, list(ad.get("modules") or []), cfg.r, cfg.alpha)
    try:
        L.load_adapter_state_dict(model, read_adapter(run_dir, info))
    except (KeyError, ValueError) as e:
        raise RunError(f"{run_dir / ad.get('file', GENCRAFT_FILE)}: {e}", param="model") from None
    return L.merge(model) if merge else model


def peft_attach(hf: nn.Module, run_dir: Path, merge: bool) -> nn.Module:
    """A peft adapter folder on a transformers model (merged and unwrapped when ``merge``)."""
    from peft import PeftModel

    if not (run_dir / PEFT_CONFIG).is_file():
        raise RunError(f"{run_dir / PEFT_CONFIG}: missing; the adapter run is incomplete", param="model")
    try:
        with _quiet_peft():
            pm = PeftModel.from_pretrained(hf, str(run_dir), is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        raise RunError(f"{run_dir}: cannot load the adapter ({str(e).splitlines()[0] if str(e) else e})",
                       param="model") from None
    return pm.merge_and_unload() if merge else pm

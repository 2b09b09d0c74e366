"""Starting a training run from a base model: ``gencraft train DATASET --from RUN|hf:PATH [--lora]``.

The training loop (:mod:`gencraft.train.loop`) stays one loop; this module gives it what differs
when a run starts from trained weights instead of random ones:

- :func:`open_base` reads the base (a gencraft ``gpt``/``lstm`` run, or a local Hugging Face causal
  LM folder) and the sha256 of its weights; :func:`plan` checks that the dataset was tokenized with
  the base's tokenizer and resolves the configs: the model's shape is the base's, the training
  defaults are fine-tuning ones (:data:`FINETUNE`), ``--set`` overrides apply (``lora.*`` to the
  adapter);
- :func:`build_model` builds the model with the base's weights (and LoRA adapters on it);
- :func:`save_best` writes what the run keeps: full weights, or only the adapter
  (``gencraft.train.lora``);
- :func:`record` is what ``gencraft.json`` says about the base (path, sha256, licenses) and the adapter.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gencraft.config import apply_overrides, from_dict, parse_overrides
from gencraft.errors import ConfigError, DataError, NotFoundError, RunError, UsageError
from gencraft.io import write_bytes
from gencraft.models import build, config_class
from gencraft.models.hf import HFCausalLM, HFConfig, positions_limit
from gencraft.runs import SEEN_FILE, load_weights, read_info, save_weights, sha256_file
from gencraft.tokenize import detect_kind, tokenizer_from_str
from gencraft.train import lora as L
from gencraft.train.config import TrainConfig, check, check_model
from gencraft.train.dpo import DPOModel
from gencraft.train.lora import LoRAConfig, hf_weight_files, weights_digest

FAMILIES = ("gpt", "lstm", "hf")

# Training defaults when starting from a trained model: a lower peak learning rate than from scratch
# (the weights are already good; a from-scratch rate undoes them), a short warmup, frequent
# evaluation and early stopping, since a personal corpus of tens of kilobytes overfits within a few
# hundred steps. LoRA trains only small fresh matrices: it takes a higher rate and no weight decay.
# Measured on the bench's corpus (bench/personalize.py, bench/RESULTS.md).
FINETUNE: dict[str, dict[str, Any]] = {
    "full": dict(learning_rate=3e-4, min_lr=3e-5, warmup_iters=20, max_iters=600, eval_interval=50,
                 eval_iters=20, patience=4, weight_decay=0.01),
    # LoRA at 4e-3 and no adapter dropout: measured against 2e-3 with dropout 0.05 at equal wall time (2 min on the
    # lore corpus) it closes most of the gap to the full fine-tune (+0.078 -> +0.037 nats; +0.034 at equal steps)
    "lora": dict(learning_rate=4e-3, min_lr=4e-4, warmup_iters=20, max_iters=600, eval_interval=50,
                 eval_iters=20, patience=4, weight_decay=0.0),
    # preference tuning (DPO): batches of 8 pairs (16 rows), ~2 passes over a few hundred pairs. Measured
    # (bench/RESULTS.md, "Personalization"): 200 steps at beta 0.1 drove the pair loss to ~0 and the corpus loss
    # up 64%; 60 steps at beta 0.5 gave the same preference shift (+32 points) for +9.6%
    "dpo": dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=60, eval_interval=20,
                eval_iters=8, patience=0, weight_decay=0.0, batch_size=16),
}
DPO_BETA = 0.5  # the anchor to the reference model (DPO's beta)
# how much the corpus loss (the run's own validation text) may rise, relative, after preference tuning:
# the adapter is scaled down until it holds (gencraft.train.dpo.fit_budget); the issue's aim is under 5%
DPO_BUDGET = 0.04
HF_FULL_LR = 1e-4  # transformer checkpoints from elsewhere are larger and were trained at lower rates
HF_BLOCK = 256  # default training window of a Hugging Face base (its position limit when smaller)


@dataclass
class Base:
    """A model to start from."""

    spec: str  # as given: a run name/path or hf:PATH
    kind: str  # gpt | lstm | hf
    path: Path  # the run directory or the Hugging Face folder
    files: list[Path]  # the weights (safetensors)
    sha256: str  # of the weights (one file: its sha256; several: of their names and digests)
    info: dict[str, Any]  # the run's gencraft.json, or the folder's config.json
    tokenizer_text: str  # its tokenizer.json

    def licenses(self) -> list[str]:
        """Licenses of what the base was trained on (a run's sources; a Hugging Face card's ``license:``)."""
        if self.kind != "hf" or "data" in self.info:
            return sorted({s.get("license") or "unknown" for s in self.info.get("data", {}).get("sources", [])}
                          or {"unknown"})
        return [_card_license(self.path)]


@dataclass
class Tune:
    """How a run starts: from ``base``, fully or with ``lora`` adapters."""

    base: Base
    kind: str
    lora: LoRAConfig | None = None
    modules: list[str] = field(default_factory=list)  # the adapted layers (qualified names)
    base_record: dict[str, Any] = field(default_factory=dict)  # gencraft.json's "base" (record_base)
    objective: str = "lm"  # lm (next-token) | dpo (preference pairs)
    beta: float = DPO_BETA  # dpo only
    sft: float = 0.0  # dpo only: weight of the preferred outputs' NLL (RPO); 0 = plain DPO
    budget: float = DPO_BUDGET  # dpo only: the corpus loss may rise this much (relative); 0 = no limit

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps to rebuild this on ``--resume``."""
        return {"base": self.base_record, "kind": self.kind, "lora": asdict(self.lora) if self.lora else None,
                "modules": self.modules, "objective": self.objective, "beta": self.beta, "sft": self.sft,
                "budget": self.budget}


def _card_license(folder: Path) -> str:
    """The ``license:`` of a Hugging Face model card's front matter, or ``unknown``."""
    card = folder / "README.md"
    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return "unknown"
    m = re.match(r"^---\s*\n(.*?)\n---", text, re.S)
    hit = re.search(r"^license:\s*['\"]?([^'\"\n]+)", m.group(1), re.M) if m else None
    return hit.group(1).strip() if hit else "unknown"


def open_base(spec: str | os.PathLike[str]) -> Base:
    """Read a base model's description, weights digest and tokenizer (no weights loaded yet)."""
    s = os.fspath(spec)
    if s.startswith("hf:"):
        return _open_hf(s)
    path, info = read_info(s)
    kind = info["kind"]
    if info.get("adapter"):
        raise UsageError(f"--from {s}: an adapter run; start from its base ({info.get('base', {}).get('spec')}) "
                         "or merge it first with `gencraft export RUN --merge --format hf`", param="from")
    if kind == "hf":  # a fine-tuned Hugging Face model: its run directory is a Hugging Face folder
        return _open_hf(f"hf:{path}", info)
    if kind not in FAMILIES:
        raise UsageError(f"--from {s}: a {kind} run; fine-tuning starts from a gpt or lstm run or a "
                         "Hugging Face causal LM (hf:PATH)", param="from")
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise RunError(f"{weights}: missing; the base run is incomplete", param="from")
    digest = sha256_file(weights)
    if info.get("model_digest") and info["model_digest"] != digest:
        raise RunError(f"{weights}: its sha256 differs from the one in {path / 'gencraft.json'}; the base is "
                       "corrupted or was replaced", param="from")
    tok = path / "tokenizer.json"
    if not tok.is_file():
        raise RunError(f"{tok}: missing; the base run is incomplete", param="from")
    return Base(s, kind, path.resolve(), [weights], digest, info, tok.read_text(encoding="utf-8"))


def _open_hf(spec: str, run_info: dict[str, Any] | None = None) -> Base:
    p = Path(spec[3:]).expanduser()
    if not (p / "config.json").is_file():
        raise NotFoundError(f"--from {spec}: no Hugging Face model folder there (config.json missing)", param="from")
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{p / 'config.json'}: not readable JSON ({e})", param="from") from None
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise RunError(f"{p / 'config.json'}: no model_type; not a transformers model config", param="from")
    files = hf_weight_files(p)
    if not files:
        raise RunError(f"--from {spec}: no .safetensors weights in {p} (gencraft loads no pickled weights); "
                       "save the model with save_pretrained(safe_serialization=True)", param="from")
    return Base(spec if run_info is None else spec, "hf", p.resolve(), files, weights_digest(files),
                run_info or cfg, hf_tokenizer_text(p))


def hf_tokenizer_text(folder: Path) -> str:
    """The ``tokenizer.json`` of a Hugging Face folder (converted from slow files when it has none)."""
    f = folder / "tokenizer.json"
    if f.is_file():
        return f.read_text(encoding="utf-8")
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise RunError(f"{folder}: no tokenizer.json and no tokenizer transformers can read ({e})",
                       param="tokenizer_from") from None
    if not getattr(tok, "is_fast", False):
        raise RunError(f"{folder}: its tokenizer has no fast (tokenizers) version", param="tokenizer_from")
    return tok.backend_tokenizer.to_str()


def base_tokenizer(spec: str) -> Any:
    """The tokenizer of a base model (a run, or ``hf:PATH``), for ``data prepare --tokenizer-from``."""
    if spec.startswith("hf:"):
        p = Path(spec[3:]).expanduser()
        if not p.is_dir():
            raise NotFoundError(f"--tokenizer-from {spec}: no such folder", param="tokenizer_from")
        text, source = hf_tokenizer_text(p), f"{p}/tokenizer.json"
    else:
        path, info = read_info(spec)
        if info["kind"] not in FAMILIES:
            raise UsageError(f"--tokenizer-from {spec}: a {info['kind']} run has no text tokenizer to share",
                             param="tokenizer_from")
        f = path / "tokenizer.json"
        if not f.is_file():
            raise RunError(f"{f}: missing; the run is incomplete", param="tokenizer_from")
        text, source = f.read_text(encoding="utf-8"), str(f)
    return tokenizer_from_str(text, source=source)


def record_base(base: Base) -> dict[str, Any]:
    """The ``base`` entry of an adapted or fine-tuned run's ``gencraft.json``."""
    rec: dict[str, Any] = {"spec": base.spec, "path": str(base.path), "kind": base.kind,
                           "files": [f.name for f in base.files], "sha256": base.sha256,
                           "licenses": base.licenses()}
    if base.kind == "hf":
        rec["model_type"] = (base.info.get("model", {}).get("hf_config") or base.info).get("model_type")
    if base.info.get("run_id"):
        rec["run_id"] = base.info["run_id"]
    return rec


# the parts of a tokenizer.json that decide the ids of a text and the text of ids; a post-processor only
# adds special tokens (gencraft encodes without them), padding and truncation are call options
_TOKENIZER_PARTS = ("normalizer", "pre_tokenizer", "model", "added_tokens", "decoder")


def _canonical_tokenizer(text: str, source: str) -> str:
    import tokenizers

    try:
        spec = json.loads(tokenizers.Tokenizer.from_str(text).to_str())
    except Exception as e:  # tokenizers' own parse error
        raise DataError(f"{source}: not a valid tokenizer file ({e})") from None
    return json.dumps({k: spec.get(k) for k in _TOKENIZER_PARTS}, sort_keys=True)


def _tok_summary(text: str) -> str:
    spec = json.loads(text)

    vocab = len((spec.get("model") or {}).get("vocab") or {}) + len(spec.get("added_tokens") or [])
    return f"{detect_kind(spec)}, ~{vocab} tokens"


def check_tokenizer(ds_path: Path, base: Base) -> None:
    """The dataset must be tokenized as the base was: otherwise one line naming both."""
    ds_text = (ds_path / "tokenizer.json").read_text(encoding="utf-8")
    if _canonical_tokenizer(ds_text, str(ds_path / "tokenizer.json")) != _canonical_tokenizer(
            base.tokenizer_text, f"{base.path}/tokenizer.json"):
        raise DataError(f"dataset {ds_path} was tokenized with its own tokenizer ({_tok_summary(ds_text)}), "
                        f"not with the base's ({base.spec}: {_tok_summary(base.tokenizer_text)}); prepare it "
                        f"again with `gencraft data prepare SOURCES --out NAME --tokenizer-from {base.spec}`",
                        param="dataset")


def base_model_config(base: Base) -> Any:
    """The model config of the base (a gencraft config dataclass, or :class:`~gencraft.models.hf.HFConfig`)."""
    if base.kind != "hf":
        return from_dict(config_class(base.kind), base.info.get("model", {}))
    if "model" in base.info and "hf_config" in base.info["model"]:  # a fine-tuned HF run
        return from_dict(HFConfig, base.info["model"])
    cfg = base.info
    limit = positions_limit(cfg)
    vocab = int(cfg.get("vocab_size") or 0)
    return HFConfig(hf_config=cfg, vocab_size=vocab, block_size=min(limit or HF_BLOCK, HF_BLOCK),
                    max_positions=limit)


# model fields a fine-tune may change (everything else is the base's shape)
_FREE_FIELDS = {"gpt": {"dropout"}, "lstm": {"dropout", "block_size"}, "hf": {"block_size"}}


def plan(ds_path: Path, ds_vocab: int, base_spec: str | None, *, lora: bool, model: str | None,
         overrides: list[str] | dict[str, str] | None, objective: str = "lm") -> tuple[Tune, Any, TrainConfig]:
    """Check the base against the dataset and resolve ``(tune, model config, training config)``."""
    if objective not in ("lm", "dpo"):
        raise UsageError(f"objective {objective!r}: expected lm or dpo", param="objective")
    if objective == "dpo" and not lora:
        raise UsageError("preference tuning trains LoRA adapters: pass lora=True", param="lora")
    if base_spec is None:
        raise UsageError("--lora trains adapters on a base model: give it with --from RUN|hf:PATH", param="lora")
    base = open_base(base_spec)
    if model is not None and model != base.kind:
        raise UsageError(f"--model {model}: the base {base_spec} is a {base.kind} model; drop --model "
                         "(a fine-tune keeps its base's family)", param="model")
    check_tokenizer(ds_path, base)
    items = parse_overrides(overrides) if not isinstance(overrides, dict) else dict(overrides or {})
    lora_items = {k[5:]: v for k, v in items.items() if k.startswith("lora.")}
    dpo_items = {k[4:]: v for k, v in items.items() if k.startswith("dpo.")}
    rest = {k: v for k, v in items.items() if not k.startswith(("lora.", "dpo."))}
    beta, sft, budget = _dpo_settings(dpo_items, objective)
    if lora_items and not lora:
        key = next(iter(lora_items))
        raise ConfigError(f"--set lora.{key}: LoRA settings need --lora", param=f"lora.{key}")
    mcfg0 = base_model_config(base)
    tcfg0 = TrainConfig(**{**_base_train(base), **FINETUNE["dpo" if objective == "dpo" else
                                                           "lora" if lora else "full"]})
    if base.kind == "hf" and not lora:
        tcfg0.learning_rate, tcfg0.min_lr = HF_FULL_LR, HF_FULL_LR / 10
    mcfg, tcfg = apply_overrides([mcfg0, tcfg0], rest)
    for k, v in asdict(mcfg).items():
        if v != asdict(mcfg0)[k] and k not in _FREE_FIELDS[base.kind]:
            raise ConfigError(f"--set {k}: the model's shape comes from the base ({base_spec}); only "
                              f"{', '.join(sorted(_FREE_FIELDS[base.kind]))} can change", param=k)
    if base.kind == "hf" and mcfg.max_positions and mcfg.block_size > mcfg.max_positions:
        raise ConfigError(f"--set block_size={mcfg.block_size}: the base takes at most {mcfg.max_positions} "
                          "positions", param="block_size")
    check(tcfg)
    check_model(base.kind, mcfg)
    if ds_vocab > mcfg.vocab_size:
        raise DataError(f"dataset {ds_path}: {ds_vocab} tokens, more than the base's {mcfg.vocab_size}",
                        param="dataset")
    tune = Tune(base, base.kind, base_record=record_base(base), objective=objective, beta=beta, sft=sft,
                budget=budget)
    if lora:
        tune.lora = L.resolve_config(lora_items)
    return tune, mcfg, tcfg


def _dpo_settings(items: dict[str, str], objective: str) -> tuple[float, float, float]:
    """``--set dpo.beta=...`` (anchor strength), ``dpo.sft=...`` (weight of the preferred outputs' NLL) and
    ``dpo.budget=...`` (how much the corpus loss may rise, relative; 0 = no limit)."""
    out = {"beta": DPO_BETA, "sft": 0.0, "budget": DPO_BUDGET}
    for key, value in items.items():
        if key not in out:
            raise ConfigError(f"--set dpo.{key}: unknown key; valid keys are dpo.beta, dpo.sft, dpo.budget",
                              param=f"dpo.{key}")
        if objective != "dpo":
            raise ConfigError(f"--set dpo.{key}: only for preference tuning (gencraft tune)", param=f"dpo.{key}")
        try:
            out[key] = float(value)
        except ValueError:
            raise ConfigError(f"--set dpo.{key}={value}: expected a number", param=f"dpo.{key}") from None
    if not out["beta"] > 0:
        raise ConfigError(f"--set dpo.beta={out['beta']:g}: must be positive", param="dpo.beta")
    if not out["sft"] >= 0:
        raise ConfigError(f"--set dpo.sft={out['sft']:g}: must not be negative", param="dpo.sft")
    if not 0 <= out["budget"] < float("inf"):
        raise ConfigError(f"--set dpo.budget={out['budget']:g}: a share like 0.05 (5%), or 0 for no limit",
                          param="dpo.budget")
    return out["beta"], out["sft"], out["budget"]


def _base_train(base: Base) -> dict[str, Any]:
    """The base's own batch size carries over (its learning rate and schedule do not)."""
    t = base.info.get("train", {}) if base.kind != "hf" or "train" in base.info else {}
    return {"batch_size": int(t["batch_size"])} if isinstance(t.get("batch_size"), int) else {}


def from_state(state: dict[str, Any] | None) -> Tune | None:
    """The :class:`Tune` a checkpoint recorded (None for a run trained from scratch)."""
    if not state:
        return None
    b = state["base"]
    base = Base(b["spec"], b["kind"], Path(b["path"]), [Path(b["path"]) / f for f in b.get("files", [])],
                b["sha256"], {}, "")
    lora = from_dict(LoRAConfig, state["lora"]) if state.get("lora") else None
    return Tune(base, state["kind"], lora, list(state.get("modules") or []), dict(b),
                state.get("objective", "lm"), float(state.get("beta", DPO_BETA)), float(state.get("sft", 0.0)),
                float(state.get("budget", DPO_BUDGET)))


def build_model(kind: str, mcfg: Any, tune: Tune | None, *, fresh: bool, resume: Path | None = None
                ) -> torch.nn.Module:
    """The model to train: random (no base), the base's weights (``fresh``), and adapters on top.

    A full fine-tune's ``--resume`` (not ``fresh``) finds every weight in the checkpoint, so the base is
    not read; an adapter's checkpoint holds only the adapter, so its base is read again (``resume``: the
    run being resumed, after checking its base is the very one it started from).
    """
    if tune is None:
        return build(kind, mcfg)
    if fresh and resume is not None:
        L.verify_base(resume, {"base": tune.base_record})
    if kind == "hf":
        model = HFCausalLM(mcfg, load_from=tune.base.path if fresh else None)
    else:
        model = build(kind, mcfg)
        if fresh:
            load_weights(model, tune.base.files[0])
    if tune.lora is not None:
        tune.modules = L.attach(model, kind, tune.lora, tune.modules or None)
    if tune.objective == "dpo":
        return DPOModel(model, tune.beta, tune.sft)
    return model


def save_best(model: torch.nn.Module, run_dir: Path, tune: Tune | None) -> str:
    """Write the run's best weights (``model.safetensors``, or the adapter); returns their sha256."""
    model = getattr(model, "policy", model)  # preference tuning wraps the adapted model
    if tune is not None and tune.lora is not None:
        return L.save_adapter(model, run_dir, tune)
    if tune is not None and tune.kind == "hf":  # under transformers' names: the run is a HF folder too
        return save_weights(model.hf, run_dir / "model.safetensors")
    return save_weights(model, run_dir / "model.safetensors")


# files of a Hugging Face folder a fine-tuned run carries, so that from_pretrained(RUN) loads it
HF_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json")


def prepare_run_dir(run_dir: Path, tune: Tune | None) -> None:
    """Give a fine-tuned Hugging Face run its config and tokenizer files (adapters name their base instead)."""
    if tune is None or tune.kind != "hf" or tune.lora is not None:
        return
    for name in HF_FILES:
        src = tune.base.path / name
        if src.is_file():
            write_bytes(run_dir / name, src.read_bytes())


def record(tune: Tune | None) -> dict[str, Any]:
    """What ``gencraft.json`` says about the base and the adapter."""
    if tune is None:
        return {}
    out: dict[str, Any] = {"base": tune.base_record}
    if tune.lora is not None:
        out["adapter"] = L.adapter_record(tune)
    return out


def base_tokens_seen(tune: Tune | None, vocab_size: int) -> np.ndarray | None:
    """Which token ids the base of a fine-tune saw in its training: a gencraft run's
    ``tokens_seen.npy``; every id for a Hugging Face base (pre-trained on far more than the run
    can tell); None when unknown (a run from before the file existed) or there is no base."""
    if tune is None:
        return None
    if tune.base.kind == "hf":
        return np.ones(vocab_size, dtype=bool)
    f = tune.base.path / SEEN_FILE
    try:
        return np.load(f, allow_pickle=False).astype(bool) if f.is_file() else None
    except (OSError, ValueError):
        return None

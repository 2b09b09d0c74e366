"""A gencraft GPT as a Hugging Face GPT-2 model (``GPT2LMHeadModel``).

The architectures are the same (pre-norm blocks, learned positions, tanh GELU = ``gelu_new``,
layer-norm eps 1e-5, tied embeddings), so export is a renaming with two twists: GPT-2 keeps its
linear layers as ``Conv1D`` whose weight is ``[in, out]`` (the transpose of ``nn.Linear``), and
a gencraft model built with ``bias=False`` gets zero biases. The folder also holds the tokenizer
(``tokenizer.json`` + ``tokenizer_config.json``), so ``from_pretrained`` loads both, and
``transformers`` logits match gencraft's to float32 rounding.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gencraft.errors import UsageError
from gencraft.io import atomic_dir
from gencraft.runs import load_text_model, read_info
from gencraft.tokenize import load_tokenizer
from gencraft.train.finetune import HF_FILES
from gencraft.train.lora import load_model

# gencraft Linear -> GPT-2 Conv1D (weights transposed)
_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def gpt2_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The GPT's weights under GPT-2's names and layouts (zero biases where gencraft has none)."""
    cfg = model.config
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {
        "transformer.wte.weight": sd["wte.weight"],
        "transformer.wpe.weight": sd["wpe.weight"],
    }

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = sd[f"{src}.weight"]
        out[f"{dst}.bias"] = sd.get(f"{src}.bias", torch.zeros(cfg.n_embd))

    for i in range(cfg.n_layer):
        src, dst = f"h.{i}", f"transformer.h.{i}"
        norm(f"{src}.ln_1", f"{dst}.ln_1")
        norm(f"{src}.ln_2", f"{dst}.ln_2")
        for name in _CONV1D:
            w = sd[f"{src}.{name}.weight"]
            out[f"{dst}.{name}.weight"] = w.t().contiguous()
            out[f"{dst}.{name}.bias"] = sd.get(f"{src}.{name}.bias", torch.zeros(w.shape[0]))
    norm("ln_f", "transformer.ln_f")
    out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def export_hf(run: str | os.PathLike[str], out: str | os.PathLike[str], merge: bool = False) -> Path:
    """Write run ``run`` (a gencraft GPT, or a fine-tuned Hugging Face model) as a Hugging Face folder at
    ``out``; returns its path. An adapter run needs ``merge``: base + adapter are written as one model."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path0, info0 = read_info(run)
    if info0.get("adapter") and not merge:
        raise UsageError(f"export: {os.fspath(run)!r} is an adapter run; add --merge to write base + adapter "
                         "as one model" + (" (the run folder itself is already a peft adapter folder)"
                                           if info0["kind"] == "hf" else ""), param="merge")
    if merge and not info0.get("adapter"):
        raise UsageError(f"export --merge: {os.fspath(run)!r} is not an adapter run; drop --merge", param="merge")
    if info0.get("adapter") or info0["kind"] == "hf":  # base + adapter merged, or a fine-tuned HF model

        model, info, path = load_model(path0, info0).eval(), info0, path0
    else:
        model, info, path = load_text_model(run)
    if info["kind"] == "hf":
        return _export_transformers(model, info, path, out)
    if info["kind"] != "gpt":
        raise UsageError(f"export --format hf: run {os.fspath(run)!r} is a {info['kind']} model; "
                         "only gpt runs map onto a Hugging Face architecture (GPT-2)", param="format")
    cfg = model.config
    tok = load_tokenizer(path / "tokenizer.json")
    hf_cfg = GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_inner=4 * cfg.n_embd, activation_function="gelu_new", layer_norm_epsilon=1e-5,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=cfg.tie_weights,
        bos_token_id=tok.eos_id, eos_token_id=tok.eos_id, pad_token_id=tok.eos_id,
        architectures=["GPT2LMHeadModel"],
    )
    hf = GPT2LMHeadModel(hf_cfg)
    missing, unexpected = hf.load_state_dict(gpt2_state_dict(model), strict=False)
    missing = [m for m in missing if not m.endswith(".attn.bias") and not m.endswith("masked_bias")]
    if missing or unexpected:  # a bug here, not a user error: say exactly what did not map
        raise RuntimeError(f"GPT-2 export: missing {missing[:4]}, unexpected {unexpected[:4]}")
    hf.eval()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok.hf, eos_token=tok.eos_token, bos_token=tok.eos_token,
                                   pad_token=tok.eos_token, unk_token=None, model_max_length=cfg.block_size,
                                   clean_up_tokenization_spaces=False)
    target = Path(os.fspath(out)).expanduser()
    with atomic_dir(target) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        fast.save_pretrained(tmp)
        (tmp / "README.md").write_text(
            f"# {path.name}\n\nA gencraft GPT (run `{info.get('run_id', '?')}`) exported as a GPT-2 model.\n"
            "Load it with `transformers.AutoModelForCausalLM.from_pretrained(DIR)` and "
            "`AutoTokenizer.from_pretrained(DIR)`. Data sources and licenses: see the run's MODEL_CARD.md.\n",
            encoding="utf-8")
    return target


def _export_transformers(model: Any, info: dict[str, Any], path: Path, out: str | os.PathLike[str]) -> Path:
    """A fine-tuned (or adapter-merged) transformers model, with its base's tokenizer files."""
    tok_dir = Path(info["base"]["path"]) if info.get("adapter") else path
    target = Path(os.fspath(out)).expanduser()
    with atomic_dir(target) as tmp:
        model.hf.save_pretrained(tmp, safe_serialization=True)
        for name in ("tokenizer.json", *HF_FILES[2:]):
            if (tok_dir / name).is_file() and not (tmp / name).exists():
                (tmp / name).write_bytes((tok_dir / name).read_bytes())
        (tmp / "README.md").write_text(
            f"# {path.name}\n\nA gencraft run (`{info.get('run_id', '?')}`) fine-tuned from "
            f"`{info.get('base', {}).get('spec', '?')}`" + (" with its LoRA adapter merged" if info.get("adapter") else "")
            + ".\nLoad it with `transformers.AutoModelForCausalLM.from_pretrained(DIR)`. Data sources and "
            "licenses: see the run's MODEL_CARD.md.\n", encoding="utf-8")
    return target

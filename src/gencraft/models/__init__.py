"""Every model family, one readable file each, and the one registry of them.

``build(kind, config)`` makes a model from a run's config; ``config_class(kind)`` and
``presets(kind)`` give its config dataclass and size presets. A run directory's ``kind`` field is a
key of :data:`FAMILIES`, so loading any run (:mod:`gencraft.runs`) and training any family go
through this one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from gencraft.errors import RunError
from gencraft.models import dcgan, gpt, hf, lstm, stylegan, text_vae, vae


@dataclass(frozen=True)
class Family:
    """One model family: its config dataclass, its ``nn.Module`` and its size presets."""

    config: type
    model: type
    presets: dict[str, dict]
    modality: str  # "text" (autoregressive, the step interface) or "image"


def _family(module: ModuleType, config: str, model: str, modality: str) -> Family:
    return Family(getattr(module, config), getattr(module, model), module.PRESETS, modality)


FAMILIES: dict[str, Family] = {
    "gpt": _family(gpt, "GPTConfig", "GPT", "text"),
    "lstm": _family(lstm, "LSTMConfig", "LSTMLM", "text"),
    "text_vae": _family(text_vae, "TextVAEConfig", "TextVAE", "text"),
    "vae": _family(vae, "VAEConfig", "VAE", "image"),
    "dcgan": _family(dcgan, "DCGANConfig", "DCGAN", "image"),
    "stylegan": _family(stylegan, "StyleGANConfig", "StyleGAN", "image"),
    "hf": _family(hf, "HFConfig", "HFCausalLM", "text"),  # a transformers model being fine-tuned
}
IMAGE_KINDS = tuple(k for k, f in FAMILIES.items() if f.modality == "image")


def family(kind: str, modality: str | None = None) -> Family:
    """The family of ``kind``; a :class:`RunError` naming the kinds when unknown (or not of ``modality``)."""
    fam = FAMILIES.get(kind)
    if fam is None or (modality is not None and fam.modality != modality):
        known = [k for k, f in FAMILIES.items() if modality is None or f.modality == modality]
        raise RunError(f"--model {kind!r}: not a {modality + ' ' if modality else ''}model family gencraft "
                       f"knows; expected {', '.join(known)}", param="model")
    return fam


def config_class(kind: str) -> type:
    """The config dataclass of a model family."""
    return family(kind).config


def presets(kind: str) -> dict[str, dict]:
    """The size presets (``tiny``, ``small``, ``base``...) of a model family."""
    return family(kind).presets


def build(kind: str, config: Any):
    """Instantiate a model of ``kind`` from its config dataclass."""
    return family(kind).model(config)

"""Model families, one readable file each. ``build(kind, config_dict)`` makes one from a run's config."""

from __future__ import annotations

from typing import Any

from gencraft.errors import RunError


def config_class(kind: str) -> type:
    if kind == "gpt":
        from gencraft.models.gpt import GPTConfig
        return GPTConfig
    if kind == "lstm":
        from gencraft.models.lstm import LSTMConfig
        return LSTMConfig
    if kind == "text_vae":
        from gencraft.models.text_vae import TextVAEConfig
        return TextVAEConfig
    raise RunError(f"unknown text model kind {kind!r}; expected gpt, lstm or text_vae", param="model")


def presets(kind: str) -> dict[str, dict]:
    if kind == "gpt":
        from gencraft.models.gpt import PRESETS
        return PRESETS
    if kind == "lstm":
        from gencraft.models.lstm import PRESETS
        return PRESETS
    if kind == "text_vae":
        from gencraft.models.text_vae import PRESETS
        return PRESETS
    raise RunError(f"unknown text model kind {kind!r}; expected gpt, lstm or text_vae", param="model")


def build(kind: str, config: Any):
    """Instantiate a text model of ``kind`` from its config dataclass."""
    if kind == "gpt":
        from gencraft.models.gpt import GPT
        return GPT(config)
    if kind == "lstm":
        from gencraft.models.lstm import LSTMLM
        return LSTMLM(config)
    if kind == "text_vae":
        from gencraft.models.text_vae import TextVAE
        return TextVAE(config)
    raise RunError(f"unknown text model kind {kind!r}; expected gpt, lstm or text_vae", param="model")

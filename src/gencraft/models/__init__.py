"""Text model families, one readable file each. ``build(kind, config)`` makes one from a run's config.

(Image models — vae, dcgan, stylegan — are built by :mod:`gencraft.train.image`.)
"""

from __future__ import annotations

import importlib
from typing import Any

from gencraft.errors import RunError

# kind -> (module, config class, model class)
TEXT_MODELS = {
    "gpt": ("gencraft.models.gpt", "GPTConfig", "GPT"),
    "lstm": ("gencraft.models.lstm", "LSTMConfig", "LSTMLM"),
    "text_vae": ("gencraft.models.text_vae", "TextVAEConfig", "TextVAE"),
}


def _family(kind: str):
    if kind not in TEXT_MODELS:
        raise RunError(f"unknown text model kind {kind!r}; expected {', '.join(TEXT_MODELS)}", param="model")
    module, config, model = TEXT_MODELS[kind]
    m = importlib.import_module(module)
    return getattr(m, config), getattr(m, model), m.PRESETS


def config_class(kind: str) -> type:
    """The config dataclass of a text model family."""
    return _family(kind)[0]


def presets(kind: str) -> dict[str, dict]:
    """The size presets (``tiny``, ``small``, ``base``) of a text model family."""
    return _family(kind)[2]


def build(kind: str, config: Any):
    """Instantiate a text model of ``kind`` from its config dataclass."""
    return _family(kind)[1](config)

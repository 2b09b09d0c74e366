"""The run directory, the contract every stage reads (docs/architecture.md): its ``gencraft.json``,
its weights, and loading any run's model through the one registry of families (:mod:`gencraft.models`).

Weights are stored with safetensors (no pickle): loading a run never executes code from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gencraft import __version__, audio
from gencraft.config import from_dict
from gencraft.errors import RunError, UsageError
from gencraft.io import atomic_path, write_json
from gencraft.models import FAMILIES, build
from gencraft.models.tts import TTS, TTSConfig
from gencraft.models.vocoder import Vocoder, VocoderConfig
from gencraft.paths import existing_run

FORMAT = 1


SEEN_FILE = "tokens_seen.npy"  # bool per token id: does the training data hold it (generation keeps unseen ones away)


def new_run_id() -> str:
    return uuid.uuid4().hex


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_dict_for_save(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors with tied (shared) weights stored once, contiguous, on the CPU."""
    out: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for name, t in model.state_dict().items():
        key = t.data_ptr()
        if key in seen and t.numel() > 0:
            continue  # a tied weight (lm_head = wte): restored by the model's own tying
        seen[key] = name
        out[name] = t.detach().to("cpu").contiguous()
    return out


def save_weights(model: torch.nn.Module, path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> str:
    """Atomically write ``model``'s weights; returns their sha256."""
    with atomic_path(path) as tmp:
        save_file(state_dict_for_save(model), str(tmp), metadata=metadata or {"format": "pt"})
    return sha256_file(path)


def load_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Load safetensors weights into ``model``; a corrupt or mismatched file is a RunError."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{path}: cannot read weights ({e}); the file is corrupted or not a safetensors file") from None
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = set(model.state_dict()) - set(state_dict_for_save(model))  # restored by the model's tying
    missing = [m for m in missing if m not in tied]
    if missing or unexpected:
        raise RunError(f"{path}: weights do not match the model config (missing {missing[:3]}, unexpected {unexpected[:3]})")


def read_info(run: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """Resolve a run name/path and read its gencraft.json."""
    path = existing_run(run)
    try:
        info = json.loads((path / "gencraft.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path / 'gencraft.json'}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or "kind" not in info:
        raise RunError(f"{path / 'gencraft.json'}: missing field 'kind'")
    if info.get("format", FORMAT) > FORMAT:
        raise RunError(f"{path}: run format {info['format']} is newer than this gencraft ({__version__}); upgrade")
    return path, info


def write_info(run_dir: str | os.PathLike[str], info: dict[str, Any]) -> None:
    info = {"format": FORMAT, "gencraft_version": __version__, **info}
    write_json(Path(run_dir) / "gencraft.json", info)


def load_model(run: str | os.PathLike[str], device: str | torch.device = "cpu", *, modality: str | None = None,
               usage: str = "") -> tuple[torch.nn.Module, dict[str, Any], Path]:
    """Load any run's model (its best weights) by the one registry of families: returns
    ``(model in eval mode, info, run_path)``. ``modality`` ("text", "image") refuses a run of another
    kind with a one-line error (``usage`` says what to give instead)."""
    path, info = read_info(run)
    kind = info["kind"]
    fam = FAMILIES.get(kind)
    if fam is None or (modality is not None and fam.modality != modality):
        what = f"a {modality} model" if modality else "a model gencraft knows"
        raise RunError(f"{path}: a {kind} run is not {what}{'; ' + usage if usage else ''}", param="run")
    model = build(kind, from_dict(fam.config, info.get("model", {})))
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise RunError(f"{weights}: missing; the run is incomplete (train it again or --resume)")
    load_weights(model, weights)
    return model.to(device).eval(), info, path


def load_text_model(run: str | os.PathLike[str], device: str | torch.device = "cpu"):
    """Load a gpt/lstm/text_vae run: returns ``(model in eval mode, info, run_path)``."""
    return load_model(run, device, modality="text", usage="give a gpt, lstm or text_vae run")


# ---- voices (``tts`` runs: an acoustic model and a vocoder, two files, so not one registry family) ----


@dataclass
class Voice:
    """A trained voice: the acoustic model, the vocoder (``None``: Griffin-Lim), its phonemes and run info."""

    acoustic: TTS
    vocoder: Vocoder | None
    tokenizer: Any  # gencraft.tokenize.phonemes.PhonemeTokenizer
    info: dict[str, Any]
    path: Path

    def to_audio(self, mel: torch.Tensor) -> np.ndarray:
        """A log-mel ``[80, T]`` -> float32 samples at 22,050 Hz, by the vocoder, or Griffin-Lim without one."""
        if self.vocoder is None:
            return audio.griffin_lim(mel)
        return self.vocoder.synthesize(mel).numpy().astype(np.float32)


def load_voice(run: str | os.PathLike[str]) -> Voice:
    """Load a ``tts`` run (``gencraft train DATASET --model tts``); a run of another kind or without its
    acoustic model is a one-line error."""
    from gencraft.tokenize.phonemes import PhonemeTokenizer

    path, info = read_info(run)
    if info.get("kind") != "tts":
        raise UsageError(f"{path}: a {info.get('kind')} run is not a voice; train one with "
                         "`gencraft train DATASET --model tts`", param="model")
    weights = path / "model.safetensors"
    if not weights.is_file() or "acoustic" not in info.get("model", {}):
        raise RunError(f"{weights}: missing; the voice's acoustic model is not trained yet (--part acoustic)")
    acoustic = TTS(from_dict(TTSConfig, info["model"]["acoustic"]))
    load_weights(acoustic, weights)
    vocoder = None
    if (path / "vocoder.safetensors").is_file() and "vocoder" in info.get("model", {}):
        vocoder = Vocoder(from_dict(VocoderConfig, info["model"]["vocoder"]), with_discriminators=False)
        load_weights(vocoder.G, path / "vocoder.safetensors")
        vocoder.eval()
    return Voice(acoustic.eval(), vocoder, PhonemeTokenizer.load(path / "phonemes.json"), info, path)

"""The run directory, the contract every stage reads (docs/architecture.md): its ``gencraft.json``,
its weights, and loading any run's model through the one registry of families (:mod:`gencraft.models`).

Weights are stored with safetensors (no pickle): loading a run never executes code from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
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
from gencraft.paths import existing_run, run_path
from gencraft.schemas import RunInfo, read_json
from gencraft.tokenize.phonemes import PhonemeTokenizer

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


def load_weights(model: torch.nn.Module, path: str | os.PathLike[str], digest: str | None = None) -> None:
    """Load safetensors weights into ``model``; a corrupt or mismatched file is a RunError.

    With ``digest`` (the sha256 a run's gencraft.json records) the file is hashed in 1 MB chunks and
    checked before its tensors are read: a flipped bit or a truncated copy is a RunError naming the
    file, not silent garbage. Hashing then memory-mapping (the page cache holds the file by then)
    costs the hash and no second copy of the weights in memory; whoever can rewrite the file
    between the two can rewrite the digest as well, so reading it once more guards nothing
    (cost: bench/RESULTS.md, "Integrity on load").
    """
    try:
        if digest and sha256_file(path) != digest:
            why = ("the run was stopped while saving its best weights: continue it with --resume"
                   if (Path(path).parent / "training.json").is_file() else
                   "the weights are corrupted or were changed (copy the run again, or retrain)")
            raise RunError(f"{path}: its sha256 differs from the {Path(path).stem}_digest its gencraft.json "
                           f"records; {why}")
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
    in_progress(run_path(run))
    path = existing_run(run)
    info = read_json(path / "gencraft.json", RunInfo, hint="train the run again or restore the file")
    if info.get("format", FORMAT) > FORMAT:
        raise RunError(f"{path}: run format {info['format']} is newer than this gencraft ({__version__}); upgrade")
    return path, info


def run_model_config(path: Path, info: dict[str, Any], cls: type) -> Any:
    """The run's model config (``info["model"]``) as ``cls``, every field checked against its range:
    a wrong value is a ConfigError naming the file and the field, before a model is built from it."""
    return from_dict(cls, info.get("model", {}), where=f"{path / 'gencraft.json'}: field model")


def load_run_weights(model: torch.nn.Module, path: Path, info: dict[str, Any], part: str = "model") -> None:
    """Load the run's ``PART.safetensors`` (``model``; a voice also has ``vocoder``) into ``model``,
    checked against the digest its gencraft.json records as ``PART_digest``."""
    weights = path / f"{part}.safetensors"
    if not weights.is_file():
        raise RunError(f"{weights}: missing; the run is incomplete (train it again or --resume)")
    load_weights(model, weights, digest=info.get(f"{part}_digest") or None)


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
    model = build(kind, run_model_config(path, info, fam.config))
    load_run_weights(model, path, info)
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
    path, info = read_info(run)
    if info.get("kind") != "tts":
        raise UsageError(f"{path}: a {info.get('kind')} run is not a voice; train one with "
                         "`gencraft train DATASET --model tts`", param="model")
    weights = path / "model.safetensors"
    if not weights.is_file() or "acoustic" not in info.get("model", {}):
        raise RunError(f"{weights}: missing; the voice's acoustic model is not trained yet (--part acoustic)")
    acoustic = TTS(from_dict(TTSConfig, info["model"]["acoustic"], where=f"{path / 'gencraft.json'}: field model.acoustic"))
    load_run_weights(acoustic, path, info)
    vocoder = None
    if (path / "vocoder.safetensors").is_file() and "vocoder" in info.get("model", {}):
        vocoder = Vocoder(from_dict(VocoderConfig, info["model"]["vocoder"],
                                   where=f"{path / 'gencraft.json'}: field model.vocoder"), with_discriminators=False)
        load_run_weights(vocoder.G, path, info, "vocoder")
        vocoder.eval()
    return Voice(acoustic.eval(), vocoder, PhonemeTokenizer.load(path / "phonemes.json"), info, path)


def in_progress(p: Path) -> None:
    """A run folder with the training mark and no gencraft.json yet is a RunError saying where it stands."""
    if (p / "gencraft.json").is_file() or not (p / MARK).is_file():
        return
    st = run_status(p)
    at = f" (checkpoint of step {st['checkpoint_step']})" if st.get("checkpoint_step") is not None else ""
    raise RunError(f"run at {p} has no evaluated weights yet: it is {st['state']}{at}; "
                   + ("wait for its first evaluation" if st["state"] == "training" else
                      "continue it with `gencraft train ... --out RUN --resume`"), param="model")


# ---- a run being trained (the mark train.autosave.Autosave keeps) ---------------------------------

MARK = "training.json"


def _alive(pid: Any, host: Any) -> bool:
    if host != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False  # another machine's process: it cannot be checked from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Where a run directory stands (the mark ``RUN/training.json`` of :class:`gencraft.train.autosave.Autosave`): ``{"state", "checkpoint_step", "pid", ...}``.

    ``state`` is ``finished`` (no mark), ``training`` (its process is alive), ``stopped`` (a signal
    stopped it after a checkpoint), ``interrupted`` (the process is gone without finishing: killed,
    crashed) or ``failed`` (it raised an error, e.g. diverged). All but ``finished`` and ``training``
    can be continued with ``--resume`` when ``checkpoint_step`` is not None.
    """
    p = Path(run_dir)
    mark = p / MARK
    if not mark.is_file():
        return {"state": "finished"}
    try:
        rec = json.loads(mark.read_text(encoding="utf-8"))
        if not isinstance(rec, dict):
            raise ValueError("not an object")
    except (OSError, ValueError):
        rec = {}
    state = rec.get("status", "training")
    if state == "training" and not _alive(rec.get("pid"), rec.get("host")):
        state = "interrupted"
    if rec.get("checkpoint_step") is None and (p / "checkpoints" / "last" / "state.json").is_file():
        try:
            rec["checkpoint_step"] = json.loads((p / "checkpoints/last/state.json").read_text()).get("step")
        except (OSError, ValueError):
            pass
    return {**rec, "state": state}

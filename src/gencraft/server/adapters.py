"""Several LoRA adapters served on one base at once, batched together (as vLLM and llama.cpp do).

An adapter run of a gencraft GPT base is not loaded as a merged copy of its base: every adapter of
one base (same path, same weights sha256) joins that base's :class:`AdapterGroup` -- one copy of the
base's weights whose adapted layers hold the adapters stacked (:func:`gencraft.models.lora.load_bank`)
and one :class:`~gencraft.server.scheduler.Scheduler`. A request names an adapter run as its model;
its sequences carry the adapter's index in the bank, and each batched step runs every row through its
own adapter (the scheduler's ``set_rows``: two gathered products per adapted layer). So requests for
different adapters of one base share a batch, and a new adapter costs its few tensors, not a model.

LSTM adapters (their matrices live inside the LSTM kernel, no row-wise path) and Hugging Face bases
(``past_key_values`` batches are not merged by the scheduler) are served merged, one model each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gencraft.backends import TextModel, load, unseen_tokens
from gencraft.errors import RunError
from gencraft.models import lora as L
from gencraft.server.scheduler import Scheduler
from gencraft.tokenize import load_tokenizer
from gencraft.train.lora import GENCRAFT_FILE, read_adapter, verify_base


def bankable(info: dict[str, Any]) -> bool:
    """Whether a run is an adapter the server batches with its base's other adapters."""
    ad = info.get("adapter") or {}
    return info.get("kind") == "gpt" and ad.get("method") == "lora" and ad.get("format") == "gencraft"


@dataclass
class Adapter:
    """An adapter run read for serving: its tensors, their scale, and what its TextModel needs."""

    path: Path
    info: dict[str, Any]
    base: Path  # the verified base run
    tensors: dict[str, torch.Tensor]
    scale: float  # alpha / r
    tokenizer: Any

    @property
    def key(self) -> tuple[str, str]:
        """Adapters with equal keys share a base (and a group)."""
        return str(self.base.resolve()), str(self.info["base"]["sha256"])


def open_adapter(path: Path, info: dict[str, Any]) -> Adapter:
    """Check an adapter run's base (there, unchanged) and read its tensors; errors name the run."""
    base = verify_base(path, info)
    ad = info["adapter"]
    tensors = read_adapter(path, info)
    tok = path / "tokenizer.json"
    if not tok.is_file():
        raise RunError(f"{tok}: missing; the run is incomplete (train it again)", param="model")
    missing = [m for m in ad.get("modules") or [] if f"{m}.lora_A.weight" not in tensors]
    if missing:
        raise RunError(f"{path / ad.get('file', GENCRAFT_FILE)}: no tensors for layer {missing[0]}; the adapter "
                       "file does not match its gencraft.json", param="model")
    return Adapter(path, info, base, tensors, float(ad.get("alpha", 16.0)) / int(ad.get("r", 8)),
                   load_tokenizer(tok))


class AdapterView:
    """A group's scheduler as one adapter's: every request it takes runs through adapter ``index``."""

    def __init__(self, sched: Scheduler, index: int) -> None:
        self.sched, self.index = sched, index

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        return self.sched.submit(*args, adapter=self.index, **kwargs)

    def close(self) -> None:
        """Nothing: the group's scheduler serves the other adapters too (:meth:`AdapterGroup.close`)."""

    def __getattr__(self, name: str) -> Any:  # limit, stats, ... are the group's
        return getattr(self.sched, name)


class AdapterGroup:
    """One base model, the adapters loaded on it (bank index ``i + 1`` = ``names[i]``), one scheduler."""

    def __init__(self, base: Path, device: str | None, sched_opts: dict[str, Any]) -> None:
        self.base = base
        self.tm = load(base, device=device)
        self.sched = Scheduler(self.tm, **sched_opts)
        self.names: list[str] = []
        self.adapters: list[dict[str, torch.Tensor]] = []
        self.scales: list[float] = []

    def add(self, name: str, ad: Adapter) -> tuple[TextModel, AdapterView]:
        """Put ``ad`` in the bank (again, under the same index, when ``name`` was there: a retrained run);
        returns the adapter's TextModel (for direct generation: the kits) and its view of the scheduler."""
        with self.sched.lock:  # between two steps: the bank changes shape only here
            if name in self.names:
                i = self.names.index(name)
                self.adapters[i], self.scales[i] = ad.tensors, ad.scale
            else:
                self.names.append(name)
                self.adapters.append(ad.tensors)
                self.scales.append(ad.scale)
                i = len(self.names) - 1
            L.load_bank(self.tm.model, self.adapters, self.scales)
        model = L.BankRow(self.tm.model, i + 1, self.sched.lock)
        vocab = self.tm.model.config.vocab_size
        tm = TextModel(model, ad.tokenizer, ad.info, str(ad.path), unseen_tokens(ad.path, ad.info, vocab))
        return tm, AdapterView(self.sched, i + 1)

    def close(self) -> None:
        self.sched.close()


__all__ = ["Adapter", "AdapterGroup", "AdapterView", "bankable", "open_adapter"]

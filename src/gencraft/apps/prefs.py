"""Learning from the library's ratings: ``gencraft tune RUN --from-ratings`` end to end.

The content library's rated outputs -> preference pairs (:func:`gencraft.train.dpo.collect_pairs`, with
fresh samples of RUN where pairs are scarce) -> a preference dataset -> a DPO adapter ``RUN+prefs``
trained through the one training loop (:mod:`gencraft.train.dpo` says how and why). This module only
composes the stages below it (library, backends, train), as the kits do.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gencraft.backends import load
from gencraft.errors import GencraftError, UsageError
from gencraft.io import write_text
from gencraft.library import Filters, Library
from gencraft.paths import dataset_path, run_path
from gencraft.runs import write_info
from gencraft.tokenize import tokenizer_from_str
from gencraft.train.budget import fit_budget
from gencraft.train.card import model_card
from gencraft.train.dpo import collect_pairs, write_preferences
from gencraft.train.finetune import open_base
from gencraft.train.loop import train


def _since(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        d = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--since {value!r}: expected a date like 2026-05-01 or 2026-05-01T12:00",
                         param="since") from None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def rated_items(kind: str | None = None, since: str | datetime | None = None, library: Any = None
                ) -> tuple[list[Any], list[Any]]:
    """Items rated up and down (with text) from the library, optionally of one kind and since a date."""
    lib = library or Library.open()
    try:
        out = []
        for rating in (1, -1):
            items, _ = lib.search(Filters(kind=kind or None, since=_since(since), rating=rating), limit=100_000)
            out.append([i for i in items if i.text])
    finally:
        if library is None:
            lib.close()
    return out[0], out[1]


def tune(run: str | os.PathLike[str], *, kind: str | None = None, since: str | datetime | None = None,
         out: str | os.PathLike[str] | None = None, overrides: list[str] | None = None, min_pairs: int = 32,
         seed: int = 0, max_time: float | None = None, progress: bool = True, library: Any = None,
         on_step: Any = None) -> Path:
    """Build preference pairs from the library's ratings and train a DPO adapter on ``run``.

    Returns the adapter run (default ``RUN+prefs`` beside ``run``): ``gencraft generate RUN+prefs``,
    the kits' ``--model RUN+prefs`` and the server load it by name.
    """
    base = open_base(os.fspath(run))
    where = "".join([f" (kind {kind})" if kind else "", f" (since {since})" if since else ""])
    liked, disliked = rated_items(kind, since, library)
    tm: list[Any] = []

    def sample(prompt: str, n: int) -> list[str]:
        if not tm:
            tm.append(load(run))
        lengths = [len(tm[0].tokenizer.encode(i.text)) for i in (liked + disliked)[:50]]
        res = tm[0].generate(prompt, n=n, temperature=1.0, max_new_tokens=int(np.median(lengths)) + 8,
                             seed=seed, stop_at_eos=True)
        return [r.text for r in (res if isinstance(res, list) else [res])]

    pairs = collect_pairs(liked, disliked, sample=sample, min_pairs=min_pairs, seed=seed, where=where)

    out_run = run_path(out) if out is not None else base.path.with_name(f"{base.path.name}+prefs")
    tok = tokenizer_from_str(base.tokenizer_text)
    ds = write_preferences(dataset_path(f"{out_run.name}-pairs"), pairs, base.tokenizer_text, tok,
                           {"kind": kind, "since": str(since) if since else None, "run": os.fspath(run)})
    # a new tune replaces the last one (the ratings have grown since), only once it has trained
    work = out_run.with_name(f".{out_run.name}.tuning")
    if work.exists():
        shutil.rmtree(work)
    train(ds, base=os.fspath(run), lora=True, out=work, overrides=list(overrides or []), max_time=max_time,
          seed=seed, progress=progress, objective="dpo")
    keep_budget(work, base.info)
    _rename_run(work, out_run)
    return out_run


def keep_budget(adapter: Path, base_info: dict[str, Any]) -> dict[str, Any] | None:
    """Hold the adapter to its corpus-loss budget (``dpo.budget``; :func:`gencraft.train.budget.fit_budget`)
    on the corpus its base was trained on; None when there is no limit or no corpus to measure (an
    ``hf:`` folder, a deleted dataset: recorded in ``adapter.budget.skipped``)."""
    info = json.loads((adapter / "gencraft.json").read_text(encoding="utf-8"))
    budget = float(info["adapter"].get("budget", 0.0))
    corpus = (base_info.get("data") or {}).get("dataset")
    if budget <= 0:
        return None
    if corpus:
        try:
            return fit_budget(adapter, corpus, budget)
        except GencraftError as e:  # the base's dataset is gone or unreadable: say so, keep the adapter
            skipped = f"the base's corpus {corpus} could not be read ({e})"
    else:
        skipped = "the base records no training corpus"
    info["adapter"]["budget"] = {"max_rise": budget, "skipped": skipped}
    write_info(adapter, info)
    return None


def _rename_run(src: Path, dst: Path) -> None:
    """Move a finished run to ``dst`` (replacing what is there) and give it that name."""
    info = json.loads((src / "gencraft.json").read_text(encoding="utf-8"))
    info["name"] = dst.name
    write_info(src, info)
    write_text(src / "MODEL_CARD.md", model_card(info))
    old = dst.with_name(f".{dst.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)

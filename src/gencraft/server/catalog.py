"""The models a server offers: every run under ``GENCRAFT_HOME/runs`` plus the configured ``hf:`` models.

Models load on first use (in a worker thread, so the event loop keeps serving) and stay loaded.
Each text model gets its own :class:`~gencraft.server.scheduler.Scheduler`, except LoRA adapters of
a gencraft GPT base: those of one base share it, batched together (:mod:`gencraft.server.adapters`).
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gencraft.backends import load
from gencraft.errors import NotFoundError, UsageError
from gencraft.generate.image import load_image_run
from gencraft.runs import read_info
from gencraft.server.adapters import AdapterGroup, bankable, open_adapter
from gencraft.server.scheduler import Scheduler

TEXT_KINDS = ("gpt", "lstm")
IMAGE_KINDS = ("vae", "dcgan", "stylegan")


@dataclass
class ModelEntry:
    """One model in the listing."""

    id: str
    kind: str  # gpt | lstm | hf | vae | dcgan | stylegan | ...
    created: int
    path: str

    @property
    def is_text(self) -> bool:
        return self.kind in TEXT_KINDS or self.kind == "hf"

    @property
    def is_image(self) -> bool:
        return self.kind in IMAGE_KINDS

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": "gencraft",
                "kind": self.kind, "capabilities": ["images"] if self.is_image else (
                    ["completions", "chat"] if self.is_text else (["audio.speech"] if self.kind == "tts" else []))}


class Catalog:
    """Lists models and hands out loaded ones (text models with their scheduler)."""

    def __init__(self, hf_models: list[str] | None = None, *, home: Path, max_batch: int = 64, max_queue: int = 256,
                 queue_timeout: float = 30.0, continuous: bool = True, on_tokens: Any = None,
                 device: str | None = None) -> None:
        self.hf_models = [m if m.startswith("hf:") else f"hf:{m}" for m in (hf_models or [])]
        self.opts = dict(max_batch=max_batch, max_queue=max_queue, queue_timeout=queue_timeout,
                         continuous=continuous, on_tokens=on_tokens)
        self.device = device
        self.home = home
        self._text: dict[str, tuple[Any, Any]] = {}  # id -> (TextModel, Scheduler or AdapterView)
        self._groups: dict[tuple[str, str], Any] = {}  # (base path, base sha256) -> AdapterGroup
        self._images: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, asyncio.Future] = {}

    def entries(self) -> list[ModelEntry]:
        out = []
        runs = self.home / "runs"
        for d in sorted(runs.iterdir()) if runs.is_dir() else []:
            f = d / "gencraft.json"
            if d.name.startswith(".") or not f.is_file():
                continue
            try:
                info = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):  # listed anyway: using it says what is wrong
                info = {}
            kind = info.get("kind") if isinstance(info, dict) else None
            out.append(ModelEntry(d.name, kind if isinstance(kind, str) else "?", int(f.stat().st_mtime), str(d)))
        for spec in self.hf_models:
            p = Path(spec[3:]).expanduser()
            created = int((p / "config.json").stat().st_mtime) if (p / "config.json").is_file() else 0
            out.append(ModelEntry(spec, "hf", created, str(p)))
        return out

    def entry(self, model_id: str) -> ModelEntry:
        if not isinstance(model_id, str) or not model_id:
            raise UsageError("model: give a model id (see GET /v1/models)", param="model")
        for e in self.entries():
            if e.id == model_id:
                if e.kind == "?":  # a gencraft.json that cannot be read: say what is wrong with it (a 400)
                    read_info(e.path)
                return e
        raise NotFoundError(f"model {model_id!r} not found; GET /v1/models lists the runs under "
                            "GENCRAFT_HOME/runs and the hf: models given to `gencraft serve --model`",
                            param="model")

    async def text(self, model_id: str) -> tuple[Any, Scheduler]:
        """The loaded text model and its scheduler (loading it the first time)."""
        e = self.entry(model_id)
        if not e.is_text:
            raise UsageError(f"model {model_id!r} is a {e.kind} run, not a text model; use "
                             "/v1/images/generations for image runs", param="model")
        if model_id in self._text:
            return self._text[model_id]
        return await self._load(model_id, lambda: self._load_text(e))

    async def image(self, model_id: str) -> Any:
        e = self.entry(model_id)
        if not e.is_image:
            raise UsageError(f"model {model_id!r} is a {e.kind} model, not an image run "
                             "(vae, dcgan or stylegan)", param="model")
        if model_id in self._images:
            return self._images[model_id]
        return await self._load(model_id, lambda: self._load_image(e))

    async def _load(self, model_id: str, fn: Any) -> Any:
        fut = self._loading.get(model_id)
        if fut is None:  # one load per model, however many requests wait for it
            fut = asyncio.ensure_future(asyncio.to_thread(fn))
            self._loading[model_id] = fut
        try:
            return await asyncio.shield(fut)
        finally:
            if fut.done():
                self._loading.pop(model_id, None)

    def _load_text(self, e: ModelEntry) -> tuple[Any, Any]:
        if e.kind != "hf":
            path, info = read_info(e.path)
            if bankable(info):
                return self._load_adapter(e.id, path, info)
        tm = load(e.id if e.kind == "hf" else e.path, device=self.device)
        sched = Scheduler(tm, **self.opts)
        with self._lock:
            self._text[e.id] = (tm, sched)
        return tm, sched

    def _load_adapter(self, model_id: str, path: Path, info: dict[str, Any]) -> tuple[Any, Any]:
        """An adapter joins its base's group (made with the first adapter of that base)."""
        ad = open_adapter(path, info)
        with self._lock:
            group = self._groups.get(ad.key)
        if group is None:
            made = AdapterGroup(ad.base, self.device, self.opts)
            with self._lock:
                group = self._groups.setdefault(ad.key, made)
            if group is not made:  # another adapter of this base made it meanwhile
                made.close()
        tm, view = group.add(model_id, ad)
        with self._lock:
            self._text[model_id] = (tm, view)
        return tm, view

    def _load_image(self, e: ModelEntry) -> Any:
        run = load_image_run(e.path)
        with self._lock:
            self._images[e.id] = run
        return run

    def forget(self, model_id: str) -> None:
        """Drop a loaded model (its run was retrained): the next request loads it again (an adapter:
        into its old place in its group's bank). A retrained base drops its adapters' group."""
        with self._lock:
            text = self._text.pop(model_id, None)
            self._images.pop(model_id, None)
            run = (self.home / "runs" / model_id).resolve()
            gone = [k for k in self._groups if Path(k[0]) == run]
            groups = [self._groups.pop(k) for k in gone]
            for g in groups:
                for name in g.names:
                    self._text.pop(name, None)
        if text is not None:
            text[1].close()
        for g in groups:
            g.close()

    def loaded(self) -> dict[str, Any]:
        """Loaded text models by id and their schedulers (an adapter: its group's, seen as its own)."""
        return {k: s for k, (_, s) in self._text.items()}

    def close(self) -> None:
        for _, s in list(self._text.values()):
            s.close()
        for g in list(self._groups.values()):
            g.close()
        self._text.clear()
        self._groups.clear()

"""The one place every training loop reports through: :class:`RunLog`.

A loop makes one ``RunLog(run_dir, total=max_steps, start_step=step)`` and hands it every record
it has (the dicts ``metrics.jsonl`` always held: ``{"step", "split", "loss", ...}``)::

    log = RunLog(run_dir, total=tc.max_iters, start_step=step)
    log.log({"step": 10, "split": "train", "loss": 2.31, "tokens_per_s": 9000.0})
    log.text_samples(100, ["a sample", "another"])     # text runs, at each evaluation
    log.image(500, run_dir / "samples/step_000500.png")  # image runs, each sample grid
    log.close()                                          # flush; draw RUN/curves.png

Each record goes to three places:

- ``RUN/metrics.jsonl`` (one line, appended; the run's record of its training);
- TensorBoard event files in ``RUN/`` itself (``tensorboard --logdir RUN``, or the runs folder for
  all of them): every number of a record is a scalar tagged ``SPLIT/FIELD`` (``train/loss``,
  ``val/loss``, ``heldout/fid``); samples are text and image summaries. A resumed run starts its
  writer with ``purge_step`` just past the checkpoint's step, so TensorBoard hides what the
  interrupted session logged after it;
- the running job's events, when the process runs a studio job (:func:`set_job_events`): a
  ``progress`` event per train record (step, total, loss, rate and its unit, ETA) and every record
  as a ``metrics`` event, which the server streams to the browser's live chart.

Only the process that writes the run makes a RunLog (rank 0 under torchrun: ``enabled=False``
elsewhere). A job is cancelled with SIGTERM: the worker calls :func:`request_stop`, and the next
``log`` raises :class:`StopRequested` (the run keeps its last checkpoint and stays resumable).
"""

from __future__ import annotations

import math
import os
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

from gencraft.errors import GencraftError
from gencraft.io import append_jsonl, atomic_path
from gencraft.music import events, roll, synth
from gencraft.tokenize import load_tokenizer

# What a studio job's worker sets (gencraft.jobs.worker); None in a plain CLI or library call.
_job_events: Path | None = None
_stop_requested = False
_open_logs: weakref.WeakSet[RunLog] = weakref.WeakSet()


class StopRequested(BaseException):  # noqa: N818 - not an error: the job was asked to stop
    """Raised inside a training loop when its job was cancelled (a BaseException, so that no
    ``except Exception`` in a loop swallows it)."""


def set_job_events(path: str | os.PathLike[str] | None) -> None:
    """Send progress, metrics and samples of every RunLog in this process to ``path`` (JSON lines)."""
    global _job_events
    _job_events = Path(path) if path is not None else None


def job_event(event: dict[str, Any]) -> None:
    """Append one event to the running job's events (nothing outside a job)."""
    if _job_events is not None:
        append_jsonl(_job_events, {"t": round(time.time(), 3), **event})


def request_stop() -> None:
    """Ask the training loop of this process to stop at its next report (signal-safe: sets a flag)."""
    global _stop_requested
    _stop_requested = True


def stop_requested() -> bool:
    return _stop_requested


def _rate_of(record: dict[str, Any]) -> tuple[float | None, str]:
    for key, unit in (("tokens_per_s", "tokens/s"), ("images_per_s", "images/s"), ("samples_per_s", "samples/s")):
        if isinstance(record.get(key), int | float):
            return float(record[key]), unit
    return None, "steps/s"


class RunLog:
    """Metrics of one training session of one run: metrics.jsonl + TensorBoard + job progress.

    ``total`` is the step the run ends at (for the ETA); ``start_step`` where this session starts
    (a resume); ``max_time`` the run's wall-clock budget in seconds and ``time_before`` the seconds
    already spent on it (both optional: the ETA is the sooner of the step and the time limits).
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, total: int, start_step: int = 0,
                 max_time: float | None = None, time_before: float = 0.0, enabled: bool = True,
                 tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.total, self.start_step = int(total), int(start_step)
        self.max_time, self.time_before = (max_time or None), float(time_before)
        self.enabled, self.tensorboard = enabled, tensorboard
        self.t0 = time.monotonic()
        self._writer: Any = None
        self._tb_failed = False
        self._closed = False
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _open_logs.add(self)
            job_event({"type": "run", "run": str(self.run_dir), "name": self.run_dir.name, "total": self.total,
                       "start_step": self.start_step})

    # ---- the records

    def log(self, record: dict[str, Any]) -> None:
        """Record one event of the run (``step`` and ``split`` required); checks for a stop request."""
        if _stop_requested:
            raise StopRequested("the job was cancelled")
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        step, split = int(record["step"]), str(record.get("split", "train"))
        w = self._tb()
        if w is not None:
            for k, v in record.items():
                if k not in ("step", "split") and isinstance(v, int | float) and not isinstance(v, bool) \
                        and math.isfinite(v):
                    w.add_scalar(f"{split}/{k}", v, step)
            if split != "train":
                w.flush()  # evaluations are rare and what a person waits for
        job_event({"type": "metrics", "record": record})
        if split == "train":
            job_event({"type": "progress", **self.progress(record)})

    def progress(self, record: dict[str, Any]) -> dict[str, Any]:
        """Step, total, loss, rate (with its unit) and the ETA in seconds after a train record."""
        step = int(record["step"])
        elapsed = time.monotonic() - self.t0
        rate, unit = _rate_of(record)
        eta = None
        if step > self.start_step and elapsed > 0:
            eta = (self.total - step) / ((step - self.start_step) / elapsed)
        if self.max_time:
            left = max(self.max_time - (self.time_before + elapsed), 0.0)
            eta = left if eta is None else min(eta, left)
        loss = record.get("loss")
        return {"step": step, "total": self.total, "loss": loss, "rate": rate, "unit": unit,
                "eta_s": None if eta is None else round(eta, 1), "elapsed_s": round(self.time_before + elapsed, 1)}

    def text_samples(self, step: int, texts: list[str], music: bool = False) -> None:
        """Text samples made at ``step`` (TensorBoard's text tab, the studio's Train tab). ``music``:
        the texts are event tokens; each is also drawn as a piano roll and synthesized
        (:meth:`music_samples`), which is what a person looks at and listens to."""
        if not self.enabled or not texts:
            return
        w = self._tb()
        if w is not None:
            # TensorBoard renders text summaries as Markdown: indented lines keep the sample as it is
            w.add_text("samples", "\n\n---\n\n".join("    " + t.replace("\n", "\n    ") for t in texts), step)
            w.flush()
        event: dict[str, Any] = {"type": "sample", "step": step, "texts": texts}
        if music:
            event["music"] = self.music_samples(step, texts)
        job_event(event)

    def music_samples(self, step: int, texts: list[str]) -> list[dict[str, Any]]:
        """Each event-token sample as ``samples/music_STEP_I.png`` (a piano roll) and ``.wav`` (the
        synthesizer), in TensorBoard's images and audio; returns ``[{roll, audio, summary}]`` (paths
        relative to the run)."""
        folder = self.run_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        w = self._tb()
        out = []
        for i, text in enumerate(texts):
            piece = events.decode(text.replace(events.EOS, " "))
            stem = f"music_{step:06d}_{i}"
            try:
                picture, audio = roll.piano_roll(piece), synth.render(piece)
                with atomic_path(folder / f"{stem}.png") as tmp:
                    picture.save(tmp, format="PNG")
                if audio.size:  # a sample with no bar (the model ended at once) has nothing to hear
                    synth.write_wav(audio, folder / f"{stem}.wav")
                if w is not None:
                    import numpy as np

                    w.add_image(f"music/{i}", np.asarray(picture), step, dataformats="HWC")
                    if audio.size:
                        w.add_audio(f"music/{i}", audio[None, :], step, sample_rate=22050)
            except Exception as e:  # a picture or a sound is never worth stopping a training over
                warnings.warn(f"{folder / stem}: music sample not drawn ({type(e).__name__}: {e})", stacklevel=2)
                continue
            out.append({"roll": f"samples/{stem}.png", "audio": f"samples/{stem}.wav" if audio.size else None,
                        "summary": roll.describe(piece)})
        if w is not None:
            w.flush()
        return out

    def image(self, step: int, path: str | os.PathLike[str], tag: str = "samples") -> None:
        """A sample grid written at ``step`` (a PNG in the run directory)."""
        if not self.enabled:
            return
        p = Path(path)
        w = self._tb()
        if w is not None and p.is_file():
            import numpy as np
            from PIL import Image

            with Image.open(p) as im:
                w.add_image(tag, np.asarray(im.convert("RGB")), step, dataformats="HWC")
            w.flush()
        job_event({"type": "sample", "step": step, "image": str(p.relative_to(self.run_dir)
                                                                if p.is_relative_to(self.run_dir) else p)})

    def close(self, curves: bool = True) -> None:
        """Flush TensorBoard and draw ``RUN/curves.png`` (what the model card shows). Idempotent."""
        if self._closed or not self.enabled:
            return
        self._closed = True
        _open_logs.discard(self)
        if self._writer is not None:
            self._writer.close()
        if curves:
            from gencraft.train.curves import write_curves

            try:
                write_curves(self.run_dir)
            except Exception as e:  # a picture is never worth losing a finished run over
                warnings.warn(f"{self.run_dir / 'curves.png'}: not drawn ({type(e).__name__}: {e})", stacklevel=2)

    # ---- TensorBoard

    def _tb(self) -> Any:
        if not self.tensorboard or self._tb_failed:
            return None
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                self._tb_failed = True
                warnings.warn(f"no TensorBoard event files for {self.run_dir} ({e}); "
                              "pip install tensorboard", stacklevel=3)
                return None
            self._writer = SummaryWriter(log_dir=str(self.run_dir), flush_secs=10,
                                         # the checkpoint's own step was logged before it was saved
                                         purge_step=self.start_step + 1 if self.start_step > 0 else None)
        return self._writer


def close_open_logs(curves: bool = True) -> None:
    """Close every RunLog of this process that a loop left open (a loop stopped by an exception:
    a cancelled job's worker calls this before it exits, so the events and curves are complete)."""
    for log in list(_open_logs):
        log.close(curves=curves and log.run_dir.is_dir())


def text_samples(model: Any, tokenizer: Any, *, n: int = 2, max_new_tokens: int = 64, seed: int = 0,
                 temperature: float = 0.8) -> list[str]:
    """``n`` texts a step-interface model writes from the start of a document (fixed seed, so the
    samples of successive evaluations compare), leaving the training RNG and mode as they were."""
    import torch

    from gencraft.generate import GenerationConfig, generate

    was = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            cfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=40, n=n, seed=seed)
            res = generate(model, tokenizer, [[tokenizer.eos_id]], cfg)
    finally:
        model.train(was)
    return [r.text for r in res[0]]


def load_run_tokenizer(path: str | os.PathLike[str]) -> Any:
    """The tokenizer in ``path`` (a dataset or run folder), or None when it cannot be read (then the
    loop shows no text samples rather than stopping)."""
    try:
        return load_tokenizer(path)
    except (GencraftError, ValueError, KeyError) as e:
        warnings.warn(f"{path}: no text samples during training ({e})", stacklevel=2)
        return None


__all__ = ["RunLog", "StopRequested", "close_open_logs", "job_event", "load_run_tokenizer", "request_stop", "set_job_events",
           "stop_requested", "text_samples"]

"""When a training loop writes its checkpoint, and what happens on Ctrl-C: :class:`Autosave`.

Every training loop (text, text VAE, images, speech, adapters) saves ``checkpoints/last`` through
its own ``checkpoint()`` function; this module decides *when*, the same way for all of them:

- every ``every_steps`` optimizer steps **or** every ``every_s`` seconds of wall time, whichever
  comes first (``--checkpoint-every``, default 300 s: on a slow CPU the first evaluation can be many
  minutes away, and a kill before it used to lose everything);
- at once on SIGINT or SIGTERM (Ctrl-C, a cluster's pre-emption): the loop saves, finishes its
  bookkeeping and :meth:`Autosave.finish` raises :class:`Interrupted` (the CLI prints one line and
  exits 130). A second Ctrl-C exits at once (atomic writes leave the last checkpoint whole).

It also marks the run directory while training: ``RUN/training.json`` holds the process, host, start
time and the last checkpoint's step; it is removed when the run ends normally, so a run directory
that has it was interrupted (the process is gone), stopped (by a signal, resumable) or is still
training (:func:`gencraft.runs.run_status`). A run that has no checkpoint yet is then never mistaken for a
finished one. A loop adopts it in a few lines::

    autosave = Autosave(run_dir, every_s=tc.checkpoint_every, every_steps=tc.checkpoint_interval,
                        step=step, log=bar.log, enabled=is_rank0)
    autosave.start()                          # or: with autosave: ...
    try:
        while step < max_steps:
            ...                               # one optimizer step
            stop = autosave.stopping          # a signal arrived (under torchrun: D.any_true(stop))
            if autosave.due(step) or last or stop:
                checkpoint()
                autosave.saved(step)
            if stop:
                break
    finally:
        autosave.close()
    ...                                       # write the run's files as usual
    autosave.finish(step)                     # removes the mark, or raises Interrupted
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from gencraft.config import Range, check_value
from gencraft.errors import ConfigError
from gencraft.io import write_json
from gencraft.runs import MARK
from gencraft.train.metrics import StopRequested

DEFAULT_EVERY_S = 300.0


class Interrupted(StopRequested):  # noqa: N818 - not an error: the user asked training to stop
    """Training stopped on SIGINT/SIGTERM after saving its checkpoint (``str()`` says how to resume).

    A :class:`~gencraft.train.metrics.StopRequested`, so a studio job's worker treats it as the
    cancellation it is, and no ``except Exception`` in a loop swallows it."""


class Autosave:
    """Checkpoint timing by steps and wall time, signal handling and the in-progress mark (see the module)."""

    def __init__(self, run_dir: str | os.PathLike[str], *, every_s: float = DEFAULT_EVERY_S, every_steps: int = 0,
                 step: int = 0, log: Callable[[str], Any] | None = None, enabled: bool = True,
                 signals: bool = True, part: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.every_s = float(every_s or 0.0)
        self.every_steps = int(every_steps or 0)
        self.enabled = enabled
        self.signals = signals
        self.part = part  # speech trains parts: the mark says which
        self.log = log or (lambda line: None)
        self.signal_name: str | None = None
        self.last_step: int | None = None
        self._start_step = step
        self._last_save = time.monotonic()
        self._previous: dict[int, Any] = {}
        self._started = time.time()

    # ---- the mark ---------------------------------------------------------------------------

    def _mark(self, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": round(self._started, 3),
                  "status": "training", "start_step": self._start_step, "checkpoint_step": self.last_step,
                  "updated": round(time.time(), 3)}
        if self.part:
            record["part"] = self.part
        write_json(self.run_dir / MARK, {**record, **fields})

    # ---- context: handlers in, handlers out -------------------------------------------------

    def start(self) -> Autosave:
        """Mark the run as training and take over SIGINT/SIGTERM (from the main thread only)."""
        self._mark()
        if self.signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def close(self) -> None:
        """Give the signals back; called from the loop's ``finally`` (an exception on its way out
        is read from ``sys.exc_info()`` and recorded in the mark: interrupted or failed)."""
        exc_type, exc, _ = sys.exc_info()
        self.__exit__(exc_type, exc, None)

    def __enter__(self) -> Autosave:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if exc_type is not None and not issubclass(exc_type, Interrupted) and (self.run_dir / MARK).exists():
            status = "interrupted" if issubclass(exc_type, KeyboardInterrupt | StopRequested) else "failed"
            try:
                self._mark(status=status, error=str(exc)[:500] if exc is not None else None)
            except OSError:
                pass

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:  # the second one: stop now (the last checkpoint is whole)
            raise KeyboardInterrupt
        self.signal_name = name
        self.log(f"{name}: saving a checkpoint and stopping (press Ctrl-C again to stop at once)")

    # ---- the loop's questions ---------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """A signal asked training to stop: save now and leave the loop."""
        return self.signal_name is not None

    def due(self, step: int) -> bool:
        """Whether to write the checkpoint after optimizer step ``step`` (steps, time or a signal)."""
        if self.stopping:
            return True
        if self.every_steps and step % self.every_steps == 0:
            return True
        return bool(self.every_s) and time.monotonic() - self._last_save >= self.every_s

    def saved(self, step: int) -> None:
        """Tell it the checkpoint of ``step`` was written (restarts the clock; updates the mark)."""
        self._last_save = time.monotonic()
        self.last_step = step
        self._mark()

    def finish(self, step: int) -> None:
        """The run's files are written: remove the mark, or, after a signal, keep it (status
        ``stopped``) and raise :class:`Interrupted` naming the step to resume from."""
        if self.stopping:
            self._mark(status="stopped", signal=self.signal_name)
            kept = (f"checkpoint of step {self.last_step} saved in {self.run_dir / 'checkpoints'}"
                    if self.last_step is not None else "no checkpoint could be saved")
            raise Interrupted(f"{self.signal_name}: training stopped at step {step}; {kept}; "
                              "continue with the same command and --resume")
        if self.enabled:
            (self.run_dir / MARK).unlink(missing_ok=True)


def parse_every(text: str | float | int, label: str = "--checkpoint-every") -> float:
    """``300``, ``90s``, ``5m``, ``1.5h`` or ``0``/``off`` -> seconds (a bad one is a ConfigError naming ``label``)."""
    s = str(text).strip().lower()
    if s in ("0", "off", "none", "never"):
        return 0.0
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(s[-1:], None)
    try:
        seconds = float(s[:-1] if scale else s) * (scale or 1.0)
    except ValueError:
        raise ConfigError(f"{label} {text!r}: expected seconds or a duration like 90s, 5m, 1h (0 = off)",
                          param="checkpoint_every") from None
    return check_value(label, seconds, Range(0, 10**7), param="checkpoint_every")

"""A job's worker process: ``python -m gencraft.jobs.worker HOME/jobs/ID``.

Started by the supervisor (:mod:`gencraft.jobs.manager`) in its own session, niced so that the
server's generation comes first. It reads ``job.json``, runs the kind's ``run`` with the job's
params, and reports through the job's ``events.jsonl``: every RunLog of the process sends its
progress, metrics and samples there (:func:`gencraft.train.metrics.set_job_events`), and the
worker ends with one ``result``, ``error`` or ``cancelled`` event. Exit codes: 0 done, 2 a
GencraftError (its message is the job's error), 3 cancelled, 1 a bug (traceback in worker.log).

SIGTERM is a cancel: for kinds that stop gracefully it only sets the stop flag, and the training
loop stops at its next report; other kinds end at once. The worker also gets SIGTERM when the
server process dies (Linux's parent-death signal), so no orphan trains on unattended.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

from gencraft.errors import GencraftError
from gencraft.jobs.kinds import JobContext, kind_of, parse_params
from gencraft.paths import home
from gencraft.train import metrics

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl: do not run unattended
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    job_dir = Path(argv[0])
    job = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    os.nice(int(os.environ.get("GENCRAFT_JOB_NICE", "10")))

    kind = kind_of(job["kind"])
    if kind.stops_gracefully:
        signal.signal(signal.SIGTERM, lambda signum, frame: metrics.request_stop())
    _die_with_parent()
    metrics.set_job_events(job_dir / "events.jsonl")

    def say(text: str) -> None:
        print(text, flush=True)
        metrics.job_event({"type": "log", "text": str(text)})

    ctx = JobContext(job_id=job["id"], home=home(), attempt=int(job.get("attempt", 1)), say=say,
                     event=metrics.job_event)
    try:
        result = kind.run(parse_params(kind, job["params"]), ctx)
    except metrics.StopRequested:
        metrics.close_open_logs()
        metrics.job_event({"type": "cancelled"})
        say("stopped: the job was cancelled")
        return 3
    except GencraftError as e:
        metrics.close_open_logs()
        metrics.job_event({"type": "error", "message": str(e), "error_type": type(e).__name__, "status": e.status})
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except Exception as e:
        traceback.print_exc()
        metrics.close_open_logs()
        metrics.job_event({"type": "error", "message": f"internal error ({type(e).__name__}: {e}); "
                           f"see {job_dir / 'worker.log'}", "error_type": type(e).__name__, "status": 500})
        return 1
    metrics.close_open_logs()  # a loop closes its own; this makes sure before the teardown is skipped
    metrics.job_event({"type": "result", "result": result})
    return 0


def _exit(code: int) -> None:
    """Leave without the interpreter's teardown: with torch loaded it takes 1.4-1.7 s on a busy
    2-core machine, time the job would still show as running. Nothing is lost: the job's files are
    written atomically, its events line by line, its RunLogs are closed above."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main(sys.argv[1:]))

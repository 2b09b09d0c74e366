"""The job queue of a GENCRAFT_HOME and the supervisor that runs it in worker processes.

Each job is a folder ``HOME/jobs/ID/``:

- ``job.json``   the job: kind, params, state, times, attempt, progress, error, result (atomic writes);
- ``events.jsonl`` what happened, one JSON object a line (``state`` changes from the supervisor;
  ``run``, ``progress``, ``metrics``, ``sample``, ``log``, ``result``, ``error`` from the worker):
  the studio's live view replays and follows it (SSE);
- ``worker.log`` the worker's stdout and stderr.

States: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled``; ``interrupted`` when
the server stopped (or died) while it ran. ``resume`` puts a failed, cancelled or interrupted job
back in the queue (training continues from its run's last checkpoint).

One :class:`JobManager` per home supervises (a lock file says which): it starts queued jobs in
worker processes (``python -m gencraft.jobs.worker JOBDIR``, niced, in their own session) as
slots free up (``slots={"train": 1, "work": 1}`` by default: one training at a time), follows
their events, and records how each ended: a worker killed from outside (``kill -9``, out of
memory) fails its job with that reason. Other processes (a second server, the CLI while a server
runs) see the queue read-only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gencraft.errors import GencraftError, NotFoundError, UsageError
from gencraft.io import append_jsonl, now_iso, write_json
from gencraft.jobs.kinds import CheckContext, Claims, kind_of, parse_params
from gencraft.jobs.uploads import prune_uploads, touch_upload

log = logging.getLogger("gencraft.jobs")

LIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")
DEFAULT_SLOTS = {"train": 1, "work": 1}
UPLOAD_RETENTION_S = 72 * 3600.0  # an upload no job has read for three days is deleted
PRUNE_EVERY_S = 3600.0


class Conflict(UsageError):
    """The job would write what a live job writes (or read what one is still writing)."""

    status = 409
    code = "conflict"


class JobsUnavailable(GencraftError):
    """This process does not run the home's jobs (another server does)."""

    status = 503
    code = "jobs_unavailable"


def new_job_id() -> str:
    return "job-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _order(job: dict[str, Any]) -> tuple[int, str]:
    """Submission order (FIFO queue, newest-first lists): the submission time in nanoseconds."""
    return int(job.get("submitted_ns", 0)), job["id"]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


class JobManager:
    """The jobs of one home: submit, list, show, cancel, resume; and (after :meth:`start`) run them."""

    def __init__(self, home: str | os.PathLike[str], *, slots: dict[str, int] | None = None, nice: int = 10,
                 poll_s: float = 0.2, cancel_grace_s: float = 30.0,
                 on_finished: Callable[[dict[str, Any]], None] | None = None,
                 env: dict[str, str] | None = None, upload_retention_s: float = UPLOAD_RETENTION_S) -> None:
        self.home = Path(home)
        self.root = self.home / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self.slots = dict(slots or DEFAULT_SLOTS)
        self.nice, self.poll_s, self.cancel_grace_s = nice, poll_s, cancel_grace_s
        self.on_finished = on_finished
        self.env = dict(env or {})  # what workers get beside GENCRAFT_HOME (the server's library: GENCRAFT_DB)
        self.upload_retention_s = upload_retention_s  # unused uploads are deleted after this (0: never)
        self._pruned = 0.0
        self.supervising = False
        self._jobs: dict[str, dict[str, Any]] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._offsets: dict[str, int] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lockfile: Any = None
        self._load()

    # ---------------------------------------------------------------- storage

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    def events_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "events.jsonl"

    def _load(self) -> None:
        for d in sorted(self.root.iterdir()):
            f = d / "job.json"
            if d.name.startswith(".") or not f.is_file():
                continue
            try:
                job = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                log.warning("%s: unreadable job (%s); skipped", f, e)
                continue
            if isinstance(job, dict) and job.get("id") == d.name:
                self._jobs[d.name] = job

    def reload(self) -> None:
        """Read the queue again from disk (a process that does not supervise it)."""
        if not self.supervising:
            with self._lock:
                self._jobs.clear()
                self._load()

    def _save(self, job: dict[str, Any]) -> None:
        write_json(self.job_dir(job["id"]) / "job.json", job)

    def _event(self, job_id: str, event: dict[str, Any]) -> None:
        append_jsonl(self.events_path(job_id), {"t": round(time.time(), 3), **event})

    # ---------------------------------------------------------------- the public calls

    def list(self) -> list[dict[str, Any]]:
        """Every job, newest first, each as :meth:`view` shows it."""
        self.reload()
        with self._lock:
            jobs = sorted(self._jobs.values(), key=_order, reverse=True)
            return [self.view(j) for j in jobs]

    def get(self, job_id: str) -> dict[str, Any]:
        self.reload()
        with self._lock:
            return self.view(self._get(job_id))

    def _get(self, job_id: str) -> dict[str, Any]:
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise NotFoundError(f"job {job_id!r} not found; GET /v1/gencraft/jobs lists them", param="job")
        return job

    def view(self, job: dict[str, Any]) -> dict[str, Any]:
        """The job as the API shows it: its record plus ``resumable`` and its place in the queue."""
        out = {"object": "gencraft.job", **job}
        out["resumable"] = job["state"] in ("failed", "cancelled", "interrupted")
        if job["state"] == "queued":
            ahead = [j for j in self._jobs.values() if j["state"] == "queued" and j["slot"] == job["slot"]
                     and _order(j) < _order(job)]
            out["queue_position"] = len(ahead) + 1
        if job["state"] == "running" and job.get("cancel_requested"):
            out["state_detail"] = "cancelling"
        return out

    def submit(self, kind: str, params: Any) -> dict[str, Any]:
        """Check and queue a job; returns it. Bad params: 4xx errors, nothing queued."""
        self._require_supervisor("submit")
        k = kind_of(kind)
        p = parse_params(k, params)
        with self._lock:
            claims = k.check(p, CheckContext(self.home, *self._taken()))
            self._conflicts(claims)
            job_id = new_job_id()
            while job_id in self._jobs:
                job_id = new_job_id()
            job = {"id": job_id, "submitted_ns": time.time_ns(), "kind": k.name, "slot": k.slot, "params": p.model_dump(mode="json"),
                   "claims": claims.__dict__, "state": "queued", "created": now_iso(), "started": None,
                   "finished": None, "attempt": 1, "pid": None, "cancel_requested": False, "error": None,
                   "result": None, "progress": None, "run": claims.writes_run or claims.reads_run,
                   "dataset": claims.writes_dataset or claims.reads_dataset}
            self.job_dir(job_id).mkdir(parents=True)
            self._save(job)
            self._jobs[job_id] = job
            self._event(job_id, {"type": "state", "state": "queued", "attempt": 1})
            out = self.view(job)
        self._wake.set()
        return out

    def _taken(self) -> tuple[set[str], set[str]]:
        runs, datasets = set(), set()
        for j in self._jobs.values():
            if j["state"] in LIVE:
                c = j.get("claims", {})
                if c.get("writes_run"):
                    runs.add(c["writes_run"])
                if c.get("writes_dataset"):
                    datasets.add(c["writes_dataset"])
        return runs, datasets

    def _conflicts(self, claims: Claims, skip: str | None = None) -> None:
        for j in self._jobs.values():
            if j["state"] not in LIVE or j["id"] == skip:
                continue
            c = j.get("claims", {})
            for mine, theirs, what in ((claims.writes_run, c.get("writes_run"), "run"),
                                       (claims.writes_dataset, c.get("writes_dataset"), "dataset"),
                                       (claims.reads_dataset, c.get("writes_dataset"), "dataset"),
                                       (claims.writes_dataset, c.get("reads_dataset"), "dataset"),
                                       (claims.reads_run, c.get("writes_run"), "run")):
                if mine and mine == theirs:
                    raise Conflict(f"{what} {mine!r} is in use by job {j['id']} ({j['kind']}, {j['state']}); "
                                   "wait for it or cancel it", param=f"params.{'out' if what == 'run' else 'dataset'}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job: a queued one at once, a running one by asking its worker to stop (SIGTERM; the
        run keeps its last checkpoint), escalating to SIGKILL after ``cancel_grace_s``. Cancelling a job
        that already ended changes nothing (and is not an error)."""
        self._require_supervisor("cancel")
        with self._lock:
            job = self._get(job_id)
            if job["state"] == "queued":
                self._finish(job, "cancelled", error="cancelled before it started")
            elif job["state"] == "running" and not self.supervising:  # no server: nothing runs it any more
                self._kill_orphan(job)
                self._finish(job, "cancelled", error="cancelled by request")
            elif job["state"] == "running" and not job.get("cancel_requested"):
                job["cancel_requested"] = True
                job["cancel_at"] = time.time()
                self._save(job)
                self._event(job_id, {"type": "state", "state": "running", "detail": "cancelling"})
                self._signal(job, signal.SIGTERM)
            return self.view(job)

    def resume(self, job_id: str) -> dict[str, Any]:
        """Queue a failed, cancelled or interrupted job again (attempt + 1); training resumes from the
        run's last checkpoint, other work starts over."""
        self._require_supervisor("resume")
        with self._lock:
            job = self._get(job_id)
            if job["state"] in LIVE:
                raise UsageError(f"job {job_id} is {job['state']}; only a failed, cancelled or interrupted job "
                                 "can be resumed", param="job")
            if job["state"] == "succeeded":
                raise UsageError(f"job {job_id} succeeded; there is nothing to resume (start a new job)", param="job")
            self._conflicts(Claims(**job.get("claims", {})), skip=job_id)
            job.update(state="queued", attempt=job["attempt"] + 1, error=None, cancel_requested=False,
                       finished=None, started=None, pid=None)
            job.pop("cancel_at", None)
            self._save(job)
            self._event(job_id, {"type": "state", "state": "queued", "attempt": job["attempt"]})
            out = self.view(job)
        self._wake.set()
        return out

    def _require_supervisor(self, what: str) -> None:
        """Changes go through the supervising process, when one runs (it alone writes job.json then)."""
        if not self.supervising and self._supervisor_running():
            raise JobsUnavailable(f"{what}: the jobs of {self.home} are run by another server "
                                  f"({self.server_info().get('url', '?')}); send the request there")

    # ---------------------------------------------------------------- supervising

    def start(self, url: str | None = None) -> bool:
        """Become this home's supervisor (False when another process already is): mark jobs that
        were running when the last supervisor stopped as interrupted, then run the queue."""
        f = open(self.root / ".supervisor.lock", "a+")  # noqa: SIM115 - held for the manager's life
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._lockfile = f
        self.supervising = True
        write_json(self.root / "server.json", {"pid": os.getpid(), "url": url, "started": now_iso()})
        with self._lock:
            self._jobs.clear()
            self._load()
            for job in self._jobs.values():
                if job["state"] == "running":
                    self._kill_orphan(job)
                    step = (job.get("progress") or {}).get("step")
                    self._finish(job, "interrupted", error="the server stopped while the job ran"
                                 + (f" (last report: step {step})" if step is not None else "")
                                 + "; resume it to continue from its last checkpoint")
        self._stop.clear()  # a manager closed before (a server's lifespan run again) supervises anew
        self._thread = threading.Thread(target=self._loop, name="gencraft-jobs", daemon=True)
        self._thread.start()
        return True

    def _supervisor_running(self) -> bool:
        f = self.root / ".supervisor.lock"
        if not f.exists():
            return False
        with open(f, "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return False

    def server_info(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "server.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def close(self, grace_s: float = 5.0) -> None:
        """Stop supervising: running jobs are asked to stop (then killed) and marked interrupted."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._thread = None
        with self._lock:
            running = [j for j in self._jobs.values() if j["state"] == "running"]
            for job in running:
                self._signal(job, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for job in running:
                proc = self._procs.get(job["id"])
                if proc is not None:
                    try:
                        proc.wait(timeout=max(deadline - time.monotonic(), 0.05))
                    except subprocess.TimeoutExpired:
                        self._signal(job, signal.SIGKILL)
                        proc.wait(timeout=5)
                self._read_events(job)
                if job.get("cancel_requested"):
                    self._finish(job, "cancelled", error="cancelled by request")
                else:
                    self._finish(job, "interrupted", error="the server stopped while the job ran; resume it to "
                                 "continue from its last checkpoint")
        self.supervising = False
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # the supervisor must outlive any one bad job
                log.exception("job supervisor")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _tick(self) -> None:
        with self._lock:
            for job_id in list(self._procs):
                job, proc = self._jobs[job_id], self._procs[job_id]
                self._read_events(job)
                rc = proc.poll()
                if rc is None:
                    if job.get("cancel_requested") and time.time() - job.get("cancel_at", 0) > self.cancel_grace_s:
                        self._signal(job, signal.SIGKILL)
                    continue
                self._read_events(job)
                self._ended(job, rc)
            for slot, limit in self.slots.items():
                running = sum(1 for j in self._jobs.values() if j["state"] == "running" and j["slot"] == slot)
                queued = sorted((j for j in self._jobs.values() if j["state"] == "queued" and j["slot"] == slot),
                                key=_order)
                for job in queued[: max(limit - running, 0)]:
                    self._launch(job)
            if time.monotonic() - self._pruned > PRUNE_EVERY_S:
                self._prune_uploads()

    def _prune_uploads(self) -> None:
        """Delete uploads no job has read for ``upload_retention_s`` (none a live job will read)."""
        self._pruned = time.monotonic()
        keep = {j["claims"]["reads_upload"] for j in self._jobs.values()
                if j["state"] in LIVE and (j.get("claims") or {}).get("reads_upload")}
        gone = prune_uploads(self.home, self.upload_retention_s, keep)
        if gone:
            log.info("deleted %d upload(s) unused for %.0f h: %s", len(gone), self.upload_retention_s / 3600,
                     ", ".join(gone))

    def _launch(self, job: dict[str, Any]) -> None:
        d = self.job_dir(job["id"])
        env = {**os.environ, **self.env, "GENCRAFT_HOME": str(self.home), "OMP_WAIT_POLICY": "PASSIVE",
               "GENCRAFT_JOB_NICE": str(self.nice), "PYTHONUNBUFFERED": "1"}
        src = str(Path(__file__).resolve().parents[2])  # the gencraft the server runs, installed or not
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._offsets.setdefault(job["id"], self.events_path(job["id"]).stat().st_size
                                 if self.events_path(job["id"]).exists() else 0)
        with open(d / "worker.log", "ab") as out:
            out.write(f"--- attempt {job['attempt']} at {now_iso()}\n".encode())
            out.flush()
            proc = subprocess.Popen([sys.executable, "-m", "gencraft.jobs.worker", str(d)], env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(self.home))
        self._procs[job["id"]] = proc
        job.update(state="running", started=now_iso(), pid=proc.pid, progress=None, result=None)
        job["events_from"] = self._offsets[job["id"]]
        self._save(job)
        self._event(job["id"], {"type": "state", "state": "running", "attempt": job["attempt"], "pid": proc.pid})

    def _read_events(self, job: dict[str, Any]) -> None:
        """Fold the worker's new events into the job (progress, run, result, error)."""
        path = self.events_path(job["id"])
        off = self._offsets.get(job["id"], 0)
        try:
            with open(path, "rb") as f:
                f.seek(off)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1  # a line being written is read next time
        self._offsets[job["id"]] = off + end
        for line in data[:end].splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            t = ev.get("type")
            if t == "progress":
                job["progress"] = {k: v for k, v in ev.items() if k not in ("type", "t")}
            elif t == "run" and not job.get("run"):
                job["run"] = ev.get("name")
            elif t == "result":
                job["result"] = ev.get("result")
            elif t == "error":
                job["error"] = ev.get("message")
            elif t == "cancelled":
                job["stopped"] = True

    def _ended(self, job: dict[str, Any], rc: int) -> None:
        self._procs.pop(job["id"], None)
        if rc == 0 and job.get("result") is not None:
            self._finish(job, "succeeded")
        elif job.get("cancel_requested"):
            self._finish(job, "cancelled", error="cancelled by request" + self._where(job))
        elif rc < 0:
            self._finish(job, "failed", error=f"the worker process was killed by {_signal_name(rc)}"
                         f"{self._where(job)} (killed from outside, or out of memory); resume it to continue "
                         "from its last checkpoint")
        else:
            self._finish(job, "failed", error=job.get("error") or f"the worker process exited with code {rc}"
                         f"{self._where(job)}; see {self.job_dir(job['id']) / 'worker.log'}")

    @staticmethod
    def _where(job: dict[str, Any]) -> str:
        step = (job.get("progress") or {}).get("step")
        return f" at step {step}" if step is not None else ""

    def _finish(self, job: dict[str, Any], state: str, error: str | None = None) -> None:
        job.update(state=state, finished=now_iso(), pid=None)
        if (job.get("claims") or {}).get("reads_upload"):  # its retention counts from its last use

            touch_upload(self.home, job["claims"]["reads_upload"])
        if error is not None or state == "succeeded":
            job["error"] = error
        self._save(job)
        self._event(job["id"], {"type": "state", "state": state, "error": job.get("error")})
        if self.on_finished is not None:  # in its own thread: the callback may wait (a model unloading)
            view = self.view(job)

            def call() -> None:
                try:
                    self.on_finished(view)
                except Exception:
                    log.exception("on_finished of job %s", view["id"])

            threading.Thread(target=call, name="gencraft-job-finished", daemon=True).start()

    def _signal(self, job: dict[str, Any], sig: int) -> None:
        pid = job.get("pid")
        if not pid:
            return
        try:
            os.killpg(pid, sig)  # the worker leads its own session: its children go too
        except ProcessLookupError:
            pass
        except PermissionError:
            log.warning("job %s: no permission to signal pid %s", job["id"], pid)

    def _kill_orphan(self, job: dict[str, Any]) -> None:
        """A worker that outlived its server (it should not: it gets SIGTERM when the server dies)."""
        pid = job.get("pid")
        if not _alive(pid):
            return
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return
        if str(self.job_dir(job["id"])).encode() in cmd:
            self._signal(job, signal.SIGKILL)

    def wait(self, job_id: str, timeout: float = 60.0, states: tuple[str, ...] = TERMINAL) -> dict[str, Any]:
        """Block until the job is in one of ``states`` (tests, the CLI's foreground runs)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(job_id)
            if job["state"] in states:
                return job
            time.sleep(0.05)
        raise TimeoutError(f"job {job_id} still {self.get(job_id)['state']} after {timeout} s")


__all__ = ["Conflict", "JobManager", "JobsUnavailable", "LIVE", "TERMINAL", "new_job_id"]

"""`gencraft jobs list|show|cancel|resume`: the studio's jobs, from a running server or the local queue.

The server is ``--server URL`` (or ``GENCRAFT_SERVER``); without one, the command finds the server
that runs this GENCRAFT_HOME's jobs, and with none running it works on the local queue directly
(``resume --now`` then runs the job in a worker right away and follows it).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gencraft.errors import GencraftError, UsageError
from gencraft.jobs import JobManager
from gencraft.paths import home

jobs_app = typer.Typer(help="Jobs of the studio: list, show, cancel, resume.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)

SERVER = typer.Option(None, "--server", help="Server URL (default: $GENCRAFT_SERVER, else the server running "
                                             "this GENCRAFT_HOME's jobs, else the local queue).")
API_KEY = typer.Option(None, "--api-key", help="API key for the server (default: $GENCRAFT_API_KEY).")


class ServerError(GencraftError):
    """What the server answered with an error (its message, its status)."""


class Jobs:
    """The same four calls, over HTTP or on the local queue."""

    def __init__(self, server: str | None, api_key: str | None) -> None:
        self.manager = None
        url = server or os.environ.get("GENCRAFT_SERVER")
        if not url:
            m = JobManager(home())
            if m._supervisor_running():
                url = m.server_info().get("url")
                if not url:
                    raise UsageError("a server runs this home's jobs but its address is unknown; pass --server URL",
                                     param="server")
            else:
                self.manager = m
        self.url = url.rstrip("/") if url else None
        self.key = api_key or os.environ.get("GENCRAFT_API_KEY")

    def _http(self, method: str, path: str) -> Any:
        import httpx

        if self.key and not (self.key.isascii() and self.key.isprintable()):
            raise UsageError("--api-key: an API key is printable ASCII (gck_...); check what was pasted", param="api_key")
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            r = httpx.request(method, f"{self.url}/v1/gencraft/jobs{path}", headers=headers, timeout=30)
        except httpx.InvalidURL as e:  # a job id or server URL no URL can hold (too long, spaces...)
            raise UsageError(f"--server {self.url}: not a URL a request can go to with this job id ({e})",
                             param="job_id") from None
        except httpx.HTTPError as e:
            raise UsageError(f"--server {self.url}: cannot reach the server ({e})", param="server") from None
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code >= 400:
            msg = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
            err = ServerError(f"{self.url}: {msg or r.reason_phrase} (HTTP {r.status_code})")
            err.status = r.status_code
            raise err
        return body

    def list(self) -> list[dict[str, Any]]:
        return self._http("GET", "")["data"] if self.url else self.manager.list()

    def get(self, job_id: str) -> dict[str, Any]:
        return self._http("GET", f"/{job_id}") if self.url else self.manager.get(job_id)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._http("DELETE", f"/{job_id}") if self.url else self.manager.cancel(job_id)

    def resume(self, job_id: str) -> dict[str, Any]:
        return self._http("POST", f"/{job_id}/resume") if self.url else self.manager.resume(job_id)


def _eta(s: float | None) -> str:
    if s is None:
        return ""
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_text(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    if not p:
        return ""
    out = f"step {p.get('step')}/{p.get('total')}"
    if isinstance(p.get("loss"), int | float):
        out += f" loss {p['loss']:.4f}"
    if isinstance(p.get("rate"), int | float):
        out += f" {p['rate']:,.0f} {p.get('unit', '')}"
    if p.get("eta_s") is not None and job["state"] == "running":
        out += f" ETA {_eta(p['eta_s'])}"
    return out


def _state(job: dict[str, Any]) -> str:
    return job.get("state_detail") or job["state"]


@jobs_app.command("list")
def list_cmd(server: str = SERVER, api_key: str = API_KEY,
             as_json: bool = typer.Option(False, "--json", help="Print the jobs as JSON.")) -> None:
    """Every job, newest first, with its state and progress."""
    jobs = Jobs(server, api_key).list()
    if as_json:
        print(json.dumps(jobs, indent=2))
        return
    if not jobs:
        console.print("no jobs yet (start them in the studio: gencraft serve)")
        return
    t = Table(show_edge=False)
    t.add_column("id", no_wrap=True)
    for col in ("kind", "state", "run / dataset", "progress", "created"):
        t.add_column(col, overflow="fold")
    for j in jobs:
        t.add_row(j["id"], j["kind"], _state(j), j.get("run") or j.get("dataset") or "", progress_text(j),
                  j["created"][:16].replace("T", " "))
    console.print(t)


@jobs_app.command("show")
def show_cmd(job_id: str = typer.Argument(..., help="The job's id."), server: str = SERVER, api_key: str = API_KEY,
             as_json: bool = typer.Option(False, "--json", help="Print the job as JSON.")) -> None:
    """One job: parameters, state, progress, result or error."""
    j = Jobs(server, api_key).get(job_id)
    if as_json:
        print(json.dumps(j, indent=2))
        return
    console.print(f"[bold]{j['id']}[/] {j['kind']} · {_state(j)} · attempt {j['attempt']}")
    for k in ("run", "dataset", "created", "started", "finished"):
        if j.get(k):
            console.print(f"  {k:<9}{escape(str(j[k]))}")
    console.print(f"  params   {escape(json.dumps(j['params']))}")
    if j.get("progress"):
        console.print(f"  progress {progress_text(j)}")
    if j.get("error"):
        console.print(f"  [red]error[/]    {escape(j['error'])}")
    if j.get("result") is not None:
        console.print(f"  result   {escape(json.dumps(j['result']))}")
    if j.get("resumable"):
        console.print(f"  resume it: gencraft jobs resume {j['id']}")


@jobs_app.command("cancel")
def cancel_cmd(job_id: str = typer.Argument(..., help="The job's id."), server: str = SERVER,
               api_key: str = API_KEY) -> None:
    """Cancel a job (a running training stops at its next report; its run stays resumable)."""
    j = Jobs(server, api_key).cancel(job_id)
    console.print(f"{j['id']}: {_state(j)}" + (f" ({escape(j['error'])})" if j.get("error") else ""))


@jobs_app.command("resume")
def resume_cmd(job_id: str = typer.Argument(..., help="The job's id."), server: str = SERVER, api_key: str = API_KEY,
               now: bool = typer.Option(False, "--now", help="No server running: run the local queue now, "
                                                              "until this job ends.")) -> None:
    """Queue a failed, cancelled or interrupted job again (training continues from its checkpoint)."""
    jobs = Jobs(server, api_key)
    j = jobs.resume(job_id)
    console.print(f"{j['id']}: queued again (attempt {j['attempt']})")
    if jobs.manager is None:
        return
    if not now:
        console.print("it runs when `gencraft serve` starts (or now: gencraft jobs resume ID --now)")
        return
    m = jobs.manager
    if not m.start():
        raise UsageError("another process started running this home's jobs; see gencraft jobs list", param="now")
    try:
        shown = ""
        while (j := m.get(job_id))["state"] in ("queued", "running"):
            if (text := progress_text(j)) and text != shown:
                console.print(text)
                shown = text
            time.sleep(0.5)
    finally:
        m.close()
    j = m.get(job_id)
    console.print(f"{j['id']}: {j['state']}" + (f" ({escape(j['error'])})" if j.get("error") else ""))
    if j["state"] != "succeeded":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")

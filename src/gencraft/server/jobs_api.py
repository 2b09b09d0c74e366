"""The studio's workbench routes: jobs (with SSE progress), uploads, datasets and runs.

- ``POST /v1/gencraft/jobs`` ``{"kind", "params"}`` queues a job (kinds: ``GET /v1/gencraft/jobs/kinds``);
  ``GET /v1/gencraft/jobs[/ID]`` lists/shows them with progress; ``DELETE /v1/gencraft/jobs/ID``
  cancels (twice is fine); ``POST /v1/gencraft/jobs/ID/resume``; ``GET /v1/gencraft/jobs/ID/events``
  streams the job's events as server-sent events (replayed from the start, or after ``?after=N`` /
  ``Last-Event-ID``), ending with ``data: [DONE]`` once the job has ended; ``.../log`` the worker's log;
  ``.../files/PATH`` a file the job made (a kit batch's ``outputs/``: JSON, CSV, Markdown, manifests).
- ``POST /v1/gencraft/uploads`` starts an upload, ``PUT /v1/gencraft/uploads/ID/files/PATH`` adds a
  file (the body) or an archive, checked (:mod:`gencraft.jobs.uploads`).
- ``GET /v1/gencraft/datasets[/NAME]``, ``DELETE /v1/gencraft/datasets/NAME``.
- ``GET /v1/gencraft/runs[/NAME]``, ``/runs/NAME/metrics``, ``/runs/NAME/files/PATH.png|.wav``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from gencraft.errors import NotFoundError, UsageError
from gencraft.jobs.kinds import KINDS, check_name, dataset_kind
from gencraft.jobs.manager import TERMINAL, Conflict
from gencraft.jobs.uploads import delete_upload as remove
from gencraft.jobs.uploads import describe, new_upload, receive, safe_relpath
from gencraft.schemas import RunInfo, read_json
from gencraft.train.curves import list_runs as runs
from gencraft.train.curves import read_metrics, summarize

router = APIRouter(tags=["studio jobs"])


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    params: dict[str, Any] = {}


def _gc(request: Request) -> Any:
    return request.app.state.gc


def _jobs(request: Request) -> Any:
    return _gc(request).jobs


# ---------------------------------------------------------------- jobs


@router.get("/v1/gencraft/jobs/kinds", summary="The kinds of job and their parameters")
async def job_kinds() -> dict[str, Any]:
    return {"object": "list", "data": [
        {"kind": k.name, "summary": k.summary, "slot": k.slot, "params": k.params.model_json_schema()}
        for k in KINDS.values()]}


@router.post("/v1/gencraft/jobs", status_code=201, summary="Start a job (it queues behind others of its slot)")
async def create_job(body: JobRequest, request: Request) -> dict[str, Any]:
    return await asyncio.to_thread(_jobs(request).submit, body.kind, body.params)


@router.get("/v1/gencraft/jobs", summary="Every job, newest first, with its progress")
async def list_jobs(request: Request, state: str | None = None, kind: str | None = None) -> dict[str, Any]:
    jobs = await asyncio.to_thread(_jobs(request).list)
    jobs = [j for j in jobs if (state is None or j["state"] == state) and (kind is None or j["kind"] == kind)]
    return {"object": "list", "data": jobs}


@router.get("/v1/gencraft/jobs/{job_id}", summary="One job")
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    return await asyncio.to_thread(_jobs(request).get, job_id)


@router.delete("/v1/gencraft/jobs/{job_id}", summary="Cancel a job (its run stays resumable)")
async def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
    return await asyncio.to_thread(_jobs(request).cancel, job_id)


@router.post("/v1/gencraft/jobs/{job_id}/resume", summary="Queue a failed, cancelled or interrupted job again")
async def resume_job(job_id: str, request: Request) -> dict[str, Any]:
    return await asyncio.to_thread(_jobs(request).resume, job_id)


@router.get("/v1/gencraft/jobs/{job_id}/log", response_class=PlainTextResponse, summary="The worker's log (tail)")
async def job_log(job_id: str, request: Request, tail: int = 65536) -> PlainTextResponse:
    jobs = _jobs(request)
    await asyncio.to_thread(jobs.get, job_id)
    p = jobs.job_dir(job_id) / "worker.log"
    data = p.read_bytes()[-max(tail, 0):] if p.is_file() else b""
    return PlainTextResponse(data.decode("utf-8", "replace"))


OUTPUT_TYPES = {".json": "application/json", ".jsonl": "application/x-ndjson", ".csv": "text/csv",
                ".md": "text/markdown", ".txt": "text/plain"}


@router.get("/v1/gencraft/jobs/{job_id}/files/{path:path}", summary="A file a job made (a kit batch's outputs)")
async def job_file(job_id: str, path: str, request: Request) -> FileResponse:
    jobs = _jobs(request)
    await asyncio.to_thread(jobs.get, job_id)  # 404 for an unknown job
    rel = safe_relpath(path)
    f = jobs.job_dir(job_id) / "outputs" / rel
    if not f.is_file():
        raise NotFoundError(f"job {job_id} made no file {rel}; its result lists its files", param="path")
    kind = OUTPUT_TYPES.get(f.suffix.lower(), "application/octet-stream")
    return FileResponse(f, media_type=f"{kind}; charset=utf-8" if kind.startswith("text/") else kind,
                        filename=f.name)


@router.get("/v1/gencraft/jobs/{job_id}/events", summary="The job's events as server-sent events")
async def job_events(job_id: str, request: Request, after: int = -1) -> StreamingResponse:
    jobs = _jobs(request)
    await asyncio.to_thread(jobs.get, job_id)  # 404 before the stream starts
    last = request.headers.get("last-event-id")
    if last is not None and last.strip().lstrip("-").isdigit():
        after = int(last)
    path = jobs.events_path(job_id)

    async def events():
        seen, offset, idle = -1, 0, 0.0
        while True:
            chunk = b""
            if path.is_file():
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            offset += end
            for line in chunk[:end].splitlines():
                seen += 1
                if seen > after and line.strip():
                    yield f"id: {seen}\ndata: {line.decode('utf-8', 'replace')}\n\n"
            if end:
                idle = 0.0
                continue
            state = (await asyncio.to_thread(jobs.get, job_id))["state"]
            if state in TERMINAL:
                # the last state event is written before the state is visible: one more read then done
                with open(path, "rb") as f:
                    f.seek(offset)
                    rest = f.read()
                for line in rest.splitlines():
                    seen += 1
                    if seen > after and line.strip():
                        yield f"id: {seen}\ndata: {line.decode('utf-8', 'replace')}\n\n"
                yield "data: [DONE]\n\n"
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.25)
            idle += 0.25
            if idle >= 15:
                idle = 0.0
                yield ": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# ---------------------------------------------------------------- uploads


@router.post("/v1/gencraft/uploads", status_code=201, summary="Start an upload (then PUT its files)")
async def create_upload(request: Request) -> dict[str, Any]:
    home = _gc(request).home
    return describe(home, await asyncio.to_thread(new_upload, home))


@router.put("/v1/gencraft/uploads/{upload_id}/files/{path:path}",
            summary="Add one file (the request body) or an archive to an upload")
async def put_upload_file(upload_id: str, path: str, request: Request) -> dict[str, Any]:
    gc = _gc(request)
    return await receive(gc.home, upload_id, path, request.stream(), gc.config.max_upload_bytes)


@router.get("/v1/gencraft/uploads/{upload_id}", summary="The files of an upload")
async def get_upload(upload_id: str, request: Request) -> dict[str, Any]:
    return await asyncio.to_thread(describe, _gc(request).home, upload_id)


@router.delete("/v1/gencraft/uploads/{upload_id}", summary="Delete an upload")
async def delete_upload(upload_id: str, request: Request) -> dict[str, Any]:
    await asyncio.to_thread(remove, _gc(request).home, upload_id)
    return {"id": upload_id, "deleted": True}


# ---------------------------------------------------------------- datasets


def _dataset_summary(d: Path) -> dict[str, Any] | None:
    try:
        m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(m, dict):
        return None
    kind = dataset_kind(m)
    splits = m.get("splits", {}) if isinstance(m.get("splits"), dict) else {}
    sources = m.get("sources", []) if isinstance(m.get("sources"), list) else []
    return {"name": d.name, "kind": kind, "created": m.get("created"),
            "documents": sum(int(s.get("documents", 0)) for s in splits.values() if isinstance(s, dict)) or None,
            "tokens": sum(int(s.get("tokens", 0)) for s in splits.values() if isinstance(s, dict)) or None,
            "images": m.get("images"), "classes": m.get("classes"), "shape": m.get("shape"),
            "utterances": sum(int(s.get("utterances", 0)) for s in splits.values() if isinstance(s, dict)) or None,
            "seconds": round(sum(float(s.get("seconds", 0)) for s in splits.values() if isinstance(s, dict)), 1) or None,
            "tokenizer": m.get("tokenizer"), "sources": len(sources),
            "licenses": sorted({str(s.get("license") or "unknown") for s in sources if isinstance(s, dict)})}


@router.get("/v1/gencraft/datasets", summary="Every prepared dataset")
async def list_datasets(request: Request) -> dict[str, Any]:
    root = _gc(request).home / "datasets"

    def scan() -> list[dict[str, Any]]:
        out = []
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            if not d.name.startswith(".") and (s := _dataset_summary(d)) is not None:
                out.append(s)
        return out

    return {"object": "list", "data": await asyncio.to_thread(scan)}


def _dataset_dir(request: Request, name: str) -> Path:
    check_name(name, "dataset", "dataset")
    d = _gc(request).home / "datasets" / name
    if not (d / "manifest.json").is_file():
        raise NotFoundError(f"dataset {name!r} not found", param="dataset")
    return d


@router.get("/v1/gencraft/datasets/{name}", summary="A dataset's manifest (steps, sources, licenses)")
async def get_dataset(name: str, request: Request) -> dict[str, Any]:
    d = _dataset_dir(request, name)
    m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    if isinstance(m.get("sources"), list) and len(m["sources"]) > 1000:
        m["sources_total"] = len(m["sources"])
        m["sources"] = m["sources"][:1000]
    return {**(_dataset_summary(d) or {}), "manifest": m}


@router.delete("/v1/gencraft/datasets/{name}", summary="Delete a dataset (not while a job uses it)")
async def delete_dataset(name: str, request: Request) -> dict[str, Any]:
    d = _dataset_dir(request, name)
    for j in await asyncio.to_thread(_jobs(request).list):
        c = j.get("claims") or {}
        if j["state"] in ("queued", "running") and name in (c.get("reads_dataset"), c.get("writes_dataset")):
            raise Conflict(f"dataset {name!r} is in use by job {j['id']} ({j['state']}); cancel it first",
                           param="dataset")

    def remove() -> None:
        trash = d.with_name(f".{d.name}.deleted")
        shutil.rmtree(trash, ignore_errors=True)
        d.rename(trash)  # gone for every reader at once; the files go after
        shutil.rmtree(trash, ignore_errors=True)

    await asyncio.to_thread(remove)
    return {"name": name, "deleted": True}


# ---------------------------------------------------------------- runs


def _run_dir(request: Request, name: str) -> Path:
    check_name(name, "run", "run")
    d = _gc(request).home / "runs" / name
    if not ((d / "gencraft.json").is_file() or (d / "checkpoints" / "last" / "state.json").is_file()):
        raise NotFoundError(f"run {name!r} not found", param="run")
    return d


@router.get("/v1/gencraft/runs", summary="Every run with its figures")
async def list_runs(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": await asyncio.to_thread(runs, _gc(request).home)}


@router.get("/v1/gencraft/runs/{name}", summary="A run: figures, gencraft.json, model card, sample grids")
async def get_run(name: str, request: Request) -> dict[str, Any]:
    d = _run_dir(request, name)

    def read() -> dict[str, Any]:
        info = read_json(d / "gencraft.json", RunInfo) if (d / "gencraft.json").is_file() else {}  # broken: a 400
        card = (d / "MODEL_CARD.md").read_text(encoding="utf-8") if (d / "MODEL_CARD.md").is_file() else ""
        grids = sorted(p.relative_to(d).as_posix() for p in d.glob("samples/step_*.png"))
        return {**summarize(d), "info": info, "model_card": card, "sample_grids": grids}

    return await asyncio.to_thread(read)


@router.get("/v1/gencraft/runs/{name}/metrics", summary="A run's metrics records (as after its resumes)")
async def run_metrics(name: str, request: Request) -> dict[str, Any]:
    d = _run_dir(request, name)
    return {"object": "list", "run": name, "data": await asyncio.to_thread(read_metrics, d)}


RUN_MEDIA = {".png": "image/png", ".wav": "audio/wav"}


@router.get("/v1/gencraft/runs/{name}/files/{path:path}",
            summary="A picture or sound of a run (curves, sample grids, music samples' piano rolls and audio)")
async def run_file(name: str, path: str, request: Request) -> FileResponse:
    d = _run_dir(request, name)
    rel = safe_relpath(path)
    media = RUN_MEDIA.get(rel.suffix.lower())
    if media is None:
        raise UsageError(f"path: {path!r}: only a run's PNG pictures and WAV samples are served", param="path")
    f = d / rel
    if not f.is_file():
        raise NotFoundError(f"{name}/{rel}: no such file", param="path")
    return FileResponse(f, media_type=media)


__all__ = ["router"]

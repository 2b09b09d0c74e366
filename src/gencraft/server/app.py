"""The FastAPI application: OpenAI-compatible API, gencraft kits and library, metrics, web studio.

``create_app(ServerConfig(...))`` builds it; ``gencraft serve`` runs it with uvicorn. Every
:class:`~gencraft.errors.GencraftError` is answered by one exception handler in OpenAI's error
shape with the error's status (404 unknown model, 400 bad parameter, 401, 429, 503...).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from gencraft import __version__, guard
from gencraft.errors import GencraftError, GuardError, UsageError
from gencraft.guard import ReleasePolicy, load_keys
from gencraft.jobs import JobManager
from gencraft.library import Library
from gencraft.paths import home
from gencraft.server.auth import KeyStore, RateLimiter
from gencraft.server.catalog import Catalog
from gencraft.server.errors import (
    ERROR_RESPONSES,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    error_body,
    gencraft_error_body,
)
from gencraft.server.jobs_api import router as jobs_router
from gencraft.server.kits_api import router as kits_router
from gencraft.server.library_api import router as library_router
from gencraft.server.metrics import Metrics
from gencraft.server.openai_api import router as openai_router
from gencraft.server.speech_api import router as speech_router
from gencraft.server.verify_api import router as verify_router

STATIC = Path(__file__).resolve().parent / "static"
PUBLIC_PATHS = ("/", "/health", "/metrics", "/docs", "/redoc", "/openapi.json", "/favicon.ico")


@dataclass
class ServerConfig:
    """How a server runs. Defaults are safe for a laptop: loopback only, keys required."""

    host: str = "127.0.0.1"
    port: int = 8000
    auth: bool = True  # False (--no-auth) only on a loopback address
    db: str | None = None  # SQLAlchemy URL; None = SQLite under GENCRAFT_HOME
    hf_models: list[str] = field(default_factory=list)
    max_batch: int = 64
    max_queue: int = 256
    queue_timeout: float = 30.0  # seconds a request may wait to join a batch (then 503)
    request_timeout: float = 300.0  # seconds of generation per request (then finish_reason "length")
    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int | None = None  # None = no cap (a prompt past the context keeps its newest tokens)
    max_tokens: int = 4096  # new tokens a request may ask for (the window shifts past the context)
    rate_per_minute: float = 600.0  # per key (or per client address without auth); 0 = off
    rate_burst: float | None = None
    default_chat_tokens: int = 256
    continuous: bool = True  # False: one request at a time (the baseline of bench/serve.py)
    device: str | None = None
    store: bool = True  # keep every generation in the library
    home: Path | None = None  # GENCRAFT_HOME fixed at start (default: the environment's)
    jobs: bool = True  # run the home's job queue (training, data preparation) in worker processes
    max_training_jobs: int = 1  # training jobs at once; the rest queue
    max_other_jobs: int = 1  # data preparation and other work at once
    job_nice: int = 10  # workers run at this nice level, so generation in the server comes first
    max_upload_bytes: int = 256 << 20  # one uploaded file, or all of an archive once unpacked
    upload_retention_hours: float = 72.0  # an upload no job read for this long is deleted; 0 = keep them all

    def check(self) -> None:
        if not self.auth and not is_loopback(self.host):
            raise UsageError(f"--no-auth with --host {self.host}: anyone on the network could use the server; "
                             "bind to 127.0.0.1 or create a key with `gencraft keys create`", param="no_auth")
        for name in ("max_batch", "max_queue", "max_body_bytes", "max_training_jobs", "max_other_jobs",
                     "max_upload_bytes", "max_tokens"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name}: must be >= 1", param=name)
        if not (math.isfinite(self.upload_retention_hours) and self.upload_retention_hours >= 0):
            raise UsageError(f"--keep-uploads {self.upload_retention_hours}: expected hours >= 0 (0 keeps every "
                             "upload)", param="keep_uploads")
        if not 0 <= self.port < 65536:
            raise UsageError(f"--port {self.port}: expected 1..65535, or 0 for any free port", param="port")

    @property
    def url(self) -> str | None:
        """Where a client on this machine reaches the server (a wildcard address on loopback); None
        while the port is 0 (``gencraft serve`` binds first and puts the port it got here)."""
        if not self.port:
            return None
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Studio:
    """What the routes share (``request.app.state.gc``)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.home = Path(config.home) if config.home is not None else home()
        self.catalog = Catalog(config.hf_models, home=self.home, max_batch=config.max_batch, max_queue=config.max_queue,
                               queue_timeout=config.queue_timeout, continuous=config.continuous,
                               device=config.device)
        self.metrics = Metrics(self.catalog)
        self.keys = KeyStore(self.home / "api_keys.json")
        self.limiter = RateLimiter(config.rate_per_minute, config.rate_burst)
        self._library: Any = None
        self._policy: Any = None
        self.started = time.time()

        self.jobs = JobManager(self.home, nice=config.job_nice, on_finished=self._job_finished,
                               slots={"train": config.max_training_jobs, "work": config.max_other_jobs},
                               env=self._worker_env(config),
                               upload_retention_s=config.upload_retention_hours * 3600)

    @staticmethod
    def _worker_env(config: ServerConfig) -> dict[str, str]:
        """What job workers need to release as this server does: its library, and ``--no-store``."""
        env = {"GENCRAFT_DB": config.db} if config.db else {}
        return env if config.store else {**env, "GENCRAFT_JOB_STORE": "0"}

    def _job_finished(self, job: dict[str, Any]) -> None:
        """A job wrote a run: serve its new weights from the next request on."""
        if job.get("claims", {}).get("writes_run"):
            self.catalog.forget(job["claims"]["writes_run"])

    def body_limit(self, path: str) -> int:
        """Request bodies are small, except uploaded files."""
        if path.startswith("/v1/gencraft/uploads/"):
            return self.config.max_upload_bytes
        return self.config.max_body_bytes

    @property
    def library(self) -> Any:
        if self._library is None:
            self._library = Library.open(self.config.db or f"sqlite:///{self.home / 'library.db'}")
        return self._library

    def close(self) -> None:
        self.jobs.close()
        self.catalog.close()
        if self._library is not None:
            self._library.close()

    @property
    def policy(self) -> Any:
        """The :class:`~gencraft.guard.ReleasePolicy` every output of this server is released under:
        the keys of the server's home, read once at startup (keys made later need a restart), and
        this server's library unless ``--no-store``."""
        if self._policy is None:
            self._policy = ReleasePolicy(store=self.config.store, library=self.library if self.config.store else None,
                                         keys=load_keys(folder=self.home / "keys"))
            if self._policy.keys is None:
                self._policy.notice_unsigned()  # in the server's log at startup, not at the first request
        return self._policy

    async def release(self, content: Any, *, request: Request | None = None, **fields: Any) -> Any:
        """:func:`gencraft.guard.release` in a worker thread under :attr:`policy`; the request's API key
        is stored with the output."""
        key = getattr(request.state, "key_id", None) if request is not None else None
        return await asyncio.to_thread(guard.release, content, policy=self.policy, api_key=key, **fields)

    async def release_texts(self, label: str, model: str, prompts: list[str], results: list[list[Any]],
                            params: dict[str, Any], request: Request, *, watermark: Any = None,
                            raise_blocked: bool = True) -> list[list[str]]:
        """Release each generated text; returns the texts as released (masked spans starred).

        A text the moderation policy blocks raises GuardError when ``raise_blocked`` (the response
        has not been sent); the release step stores it either way with the guard's verdict.
        """
        tm, _ = await self.catalog.text(model)
        out: list[list[str]] = []
        blocked: GuardError | None = None
        for prompt, rs in zip(prompts, results, strict=True):
            texts = []
            for r in rs:
                self.metrics.completion_tokens(model, r.completion_tokens)
                p = dict(params, index=r.index, finish_reason=r.finish_reason)
                try:
                    rel = await self.release(r.text, request=request, kind="text", label=label, model=tm,
                                             model_name=model, params=p, seed=params.get("seed_used"),
                                             prompt=prompt, watermark=watermark)
                    texts.append(rel.text)
                except GuardError as e:
                    blocked = blocked or e
                    texts.append(r.text)
            out.append(texts)
        if blocked is not None and raise_blocked:
            raise blocked
        return out


class Guardrails:
    """Pure ASGI middleware: body-size cap, API-key check, rate limit, request metrics.

    Pure ASGI (not BaseHTTPMiddleware) so streaming responses and client disconnects pass
    straight through.
    """

    def __init__(self, app: Any, studio: Studio) -> None:
        self.app, self.gc = app, studio

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.monotonic()
        path = scope.get("path", "")
        status_box = [500]

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
            err = self._check(scope)
            if err is not None:
                await _send_error(send, err)
                status_box[0] = err.status
                return
            receive = self._capped(receive, self.gc.body_limit(path))
            await self.app(scope, receive, send_wrapper)
        finally:
            if path.startswith("/v1/") or path == "/health":
                self.gc.metrics.request(_route(path), status_box[0], time.monotonic() - t0)

    def _check(self, scope: dict) -> GencraftError | None:
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        size = headers.get("content-length")
        limit = self.gc.body_limit(path)
        if size and size.isdigit() and int(size) > limit:
            return PayloadTooLarge(f"request body of {size} bytes is over the limit of {limit}; send less",
                                   param=None)
        if not path.startswith("/v1/"):
            return None
        scope.setdefault("state", {})
        who, rate = None, None
        try:
            if self.gc.config.auth:
                auth = headers.get("authorization", "")
                if not auth.lower().startswith("bearer "):
                    raise Unauthenticated("missing API key: send 'Authorization: Bearer KEY' "
                                          "(create one with `gencraft keys create`)")
                rec = self.gc.keys.verify(auth[7:].strip())
                who, rate = f"key {rec.id}", rec.rate_per_minute
                scope["state"]["key_id"] = rec.id
            else:
                client = scope.get("client") or ("local", 0)
                who = f"client {client[0]}"
            self.gc.limiter.check(who, rate)
        except GencraftError as e:
            return e
        return None

    @staticmethod
    def _capped(receive: Any, limit: int) -> Any:
        seen = [0]

        async def wrapped() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise PayloadTooLarge(f"request body is over the limit of {limit} bytes; send less")
            return message

        return wrapped


def _route(path: str) -> str:
    """A low-cardinality label for the metrics (ids dropped)."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[:3] == ["v1", "gencraft", "library"]:
        return "/v1/gencraft/library"
    if len(parts) >= 3 and parts[:3] == ["v1", "gencraft", "game"]:
        return "/v1/gencraft/game"
    if len(parts) >= 2 and parts[:2] == ["v1", "models"]:
        return "/v1/models"
    if len(parts) >= 3 and parts[:2] == ["v1", "gencraft"] and parts[2] in ("jobs", "uploads", "datasets", "runs"):
        return "/v1/gencraft/" + parts[2]
    return path if len(path) < 64 else path[:64]


async def _send_error(send: Any, e: GencraftError) -> None:
    import json

    body = json.dumps(gencraft_error_body(e)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if isinstance(e, RateLimited):
        headers.append((b"retry-after", str(max(1, round(e.retry_after))).encode()))
    await send({"type": "http.response.start", "status": e.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """The studio app. Models load on first use; the library is migrated at startup."""
    config = config or ServerConfig()
    config.check()
    studio = Studio(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(lambda: studio.policy)  # keys read once; the library migrated when it stores
        if config.jobs:
            studio.jobs.start(url=config.url)
        try:
            yield
        finally:
            studio.close()

    app = FastAPI(
        title="gencraft studio", version=__version__, lifespan=lifespan, responses=ERROR_RESPONSES,
        description="OpenAI-compatible API for gencraft runs and Hugging Face models, the gencraft kits "
                    "(write, game, ads) and the content library. Authenticate with `Authorization: Bearer KEY` "
                    "(`gencraft keys create`) unless the server runs with --no-auth.")
    app.state.gc = studio

    @app.exception_handler(GencraftError)
    async def _gencraft_error(request: Request, e: GencraftError) -> JSONResponse:
        headers = {"Retry-After": str(max(1, round(e.retry_after)))} if isinstance(e, RateLimited) else None
        return JSONResponse(gencraft_error_body(e), status_code=e.status, headers=headers)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, e: Exception) -> JSONResponse:  # a bug: logged, not leaked
        import logging

        logging.getLogger("gencraft.server").exception("internal error on %s", request.url.path)
        return JSONResponse(error_body(f"internal server error ({type(e).__name__}); see the server log", 500,
                                       "internal_error", None), status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path")]
        param = ".".join(loc) or None
        msg = f"{param or 'body'}: {first.get('msg', 'invalid value')}"
        return JSONResponse(error_body(msg, 400, "invalid_value", param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 404:
            msg, code = f"no route {request.url.path}; see /docs", "not_found"
        elif e.status_code == 405:
            msg, code = f"{request.method} is not allowed on {request.url.path}; see /docs", "method_not_allowed"
        else:
            msg, code = f"{e.detail}", "invalid_request"
        return JSONResponse(error_body(msg, e.status_code, code, None), status_code=e.status_code,
                            headers=getattr(e, "headers", None))

    app.include_router(openai_router)
    app.include_router(speech_router)
    app.include_router(kits_router)
    app.include_router(library_router)
    app.include_router(jobs_router)
    app.include_router(verify_router)

    @app.get("/health", tags=["server"], summary="Liveness and load")
    async def health() -> dict[str, Any]:
        loaded = studio.catalog.loaded()
        return {"status": "ok", "version": __version__, "uptime_s": round(time.time() - studio.started, 1),
                "auth": config.auth,
                "models_loaded": {k: {"queued": s.stats.queued, "active": s.stats.active} for k, s in loaded.items()}}

    @app.get("/metrics", tags=["server"], summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(studio.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(Guardrails, studio=studio)
    plain_openapi = app.openapi

    def openapi_with_links() -> dict[str, Any]:
        if app.openapi_schema is None:
            add_links(plain_openapi())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi_with_links  # type: ignore[method-assign]
    return app


# OpenAPI links: which id of a response the next request takes (a listed library item is shown, rated,
# deleted; a submitted job shown, cancelled, resumed; an upload filled and deleted; a listed dataset or
# run shown). Clients may follow them; schemathesis' stateful tests do (tests/test_server_schema.py).
_FIRST, _OWN = "$response.body#/data/0/", "$response.body#/"
LINKS: list[tuple[str, str, str, str, str, str]] = [  # (path, method, status, target path, target method, value)
    *[("/v1/gencraft/library", "get", "200", t, m, _FIRST + "id") for t, m in (
        ("/v1/gencraft/library/{item_id}", "get"), ("/v1/gencraft/library/{item_id}/rating", "post"),
        ("/v1/gencraft/library/{item_id}/image", "get"), ("/v1/gencraft/library/{item_id}", "delete"))],
    *[("/v1/gencraft/library/{item_id}", "get", "200", t, m, _OWN + "id") for t, m in (
        ("/v1/gencraft/library/{item_id}/rating", "post"), ("/v1/gencraft/library/{item_id}", "delete"))],
    ("/v1/gencraft/library/{item_id}/rating", "post", "200", "/v1/gencraft/library/{item_id}", "get", _OWN + "id"),
    *[(src, m0, st, t, m, val) for src, m0, st, val in (
        ("/v1/gencraft/jobs", "post", "201", _OWN + "id"), ("/v1/gencraft/jobs", "get", "200", _FIRST + "id"),
        ("/v1/gencraft/jobs/{job_id}", "get", "200", _OWN + "id"),
        ("/v1/gencraft/jobs/{job_id}", "delete", "200", _OWN + "id"))
      for t, m in (("/v1/gencraft/jobs/{job_id}", "get"), ("/v1/gencraft/jobs/{job_id}", "delete"),
                   ("/v1/gencraft/jobs/{job_id}/resume", "post"), ("/v1/gencraft/jobs/{job_id}/log", "get"))
      if (t, m) != (src, m0)],
    *[(src, m0, st, t, m, _OWN + "id") for src, m0, st in (
        ("/v1/gencraft/uploads", "post", "201"), ("/v1/gencraft/uploads/{upload_id}", "get", "200"))
      for t, m in (("/v1/gencraft/uploads/{upload_id}/files/{path}", "put"), ("/v1/gencraft/uploads/{upload_id}", "get"),
                   ("/v1/gencraft/uploads/{upload_id}", "delete")) if (t, m) != (src, m0)],
    ("/v1/gencraft/datasets", "get", "200", "/v1/gencraft/datasets/{name}", "get", _FIRST + "name"),
    ("/v1/gencraft/runs", "get", "200", "/v1/gencraft/runs/{name}", "get", _FIRST + "name"),
    ("/v1/gencraft/runs", "get", "200", "/v1/gencraft/runs/{name}/metrics", "get", _FIRST + "name"),
]


def add_links(schema: dict[str, Any]) -> dict[str, Any]:
    """Add :data:`LINKS` to a generated OpenAPI schema (in place; returns it). A route that is gone
    is skipped, so the table cannot break the schema."""
    paths = schema.get("paths", {})
    for path, method, status, target, tmethod, value in LINKS:
        op, top = paths.get(path, {}).get(method), paths.get(target, {}).get(tmethod)
        if op is None or top is None:
            continue
        param = target[target.index("{") + 1:target.index("}")]
        ref = "#/paths/" + target.replace("~", "~0").replace("/", "~1") + "/" + tmethod
        name = f"{tmethod}_{target.rstrip('}').rsplit('/', 1)[-1].strip('{')}"
        response = op.setdefault("responses", {}).setdefault(status, {"description": "Successful Response"})
        response.setdefault("links", {})[name] = {"operationRef": ref, "parameters": {param: value}}
    return schema


__all__ = ["ServerConfig", "Studio", "create_app", "is_loopback"]

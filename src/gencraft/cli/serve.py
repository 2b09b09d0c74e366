"""`gencraft serve`: the studio server (OpenAI-compatible API, kits, library, web studio)."""

from __future__ import annotations

import socket

import typer
from rich.console import Console

import gencraft
from gencraft.errors import UsageError

console = Console(highlight=False, stderr=True)


def serve_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless told otherwise)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0: any free one; jobs/server.json says which)."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without API keys (loopback addresses only)."),
    db: str = typer.Option(None, "--db", help="Library database URL (default: SQLite under GENCRAFT_HOME; "
                                             "postgresql://USER@HOST/DB works too)."),
    model: list[str] = typer.Option([], "--model", help="Also serve this local Hugging Face model (hf:PATH); "
                                                        "repeatable. Every run under GENCRAFT_HOME/runs is served."),
    max_batch: int = typer.Option(64, "--max-batch", help="Most sequences decoded together per model."),
    max_queue: int = typer.Option(256, "--max-queue", help="Most waiting sequences per model (then 429)."),
    rate: float = typer.Option(600.0, "--rate", help="Requests per minute per key (or client); 0 = no limit."),
    max_prompt_tokens: int = typer.Option(None, "--max-prompt-tokens", help="Cap on prompt length (tokens)."),
    max_tokens: int = typer.Option(4096, "--max-tokens", help="Most new tokens a request may ask for (the "
                                   "context window shifts past the model's context, as in `generate`)."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds of generation per request."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1... (default cpu)."),
    no_store: bool = typer.Option(False, "--no-store", help="Don't keep generations in the library."),
    training_jobs: int = typer.Option(1, "--training-jobs", help="Training jobs run at once (the rest queue)."),
    no_jobs: bool = typer.Option(False, "--no-jobs", help="Don't run the job queue in this server."),
    max_upload_mb: float = typer.Option(256, "--max-upload-mb", help="Largest uploaded file (or unpacked archive), MB."),
    keep_uploads: float = typer.Option(72, "--keep-uploads", help="Hours an upload is kept after its last use "
                                       "(a file added, a data job that read it); 0 = keep them all."),
) -> None:
    """Serve every run (and --model hf:PATH) over an OpenAI-compatible API with the web studio at /."""
    gencraft.use_thread_policy("decode")  # the server decodes (its jobs run in worker processes of their own)
    import uvicorn

    from gencraft.server import ServerConfig, create_app

    cfg = ServerConfig(host=host, port=port, auth=not no_auth, db=db, hf_models=list(model), max_batch=max_batch,
                       max_queue=max_queue, rate_per_minute=rate, max_prompt_tokens=max_prompt_tokens,
                       max_tokens=max_tokens, request_timeout=timeout, device=device, store=not no_store, jobs=not no_jobs,
                       max_training_jobs=training_jobs, max_upload_bytes=int(max_upload_mb * (1 << 20)),
                       upload_retention_hours=keep_uploads)
    cfg.check()
    sock = listen(host, port)  # before the app starts: --port 0 gets its port, and jobs/server.json says which
    cfg.port = sock.getsockname()[1]
    app = create_app(cfg)
    console.print(f"gencraft studio on {cfg.url}/  (API: {cfg.url}/v1, docs: /docs"
                  f"{', no auth' if no_auth else ', keys: gencraft keys create'})", markup=False)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: any free port); a port in use is a UsageError."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as e:
        raise UsageError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e}); "
                         "choose another port, or 0 for any free one", param="port") from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)

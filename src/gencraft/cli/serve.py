"""`gencraft serve`: the studio server (OpenAI-compatible API, kits, library, web studio)."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console(highlight=False, stderr=True)


def serve_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless told otherwise)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
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
) -> None:
    """Serve every run (and --model hf:PATH) over an OpenAI-compatible API with the web studio at /."""
    import gencraft

    gencraft.use_thread_policy("decode")  # the server decodes (its jobs run in worker processes of their own)
    import uvicorn

    from gencraft.server import ServerConfig, create_app

    cfg = ServerConfig(host=host, port=port, auth=not no_auth, db=db, hf_models=list(model), max_batch=max_batch,
                       max_queue=max_queue, rate_per_minute=rate, max_prompt_tokens=max_prompt_tokens,
                       max_tokens=max_tokens, request_timeout=timeout, device=device, store=not no_store, jobs=not no_jobs,
                       max_training_jobs=training_jobs, max_upload_bytes=int(max_upload_mb * (1 << 20)))
    app = create_app(cfg)
    console.print(f"gencraft studio on http://{host}:{port}/  (API: http://{host}:{port}/v1, docs: /docs"
                  f"{', no auth' if no_auth else ', keys: gencraft keys create'})", markup=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)

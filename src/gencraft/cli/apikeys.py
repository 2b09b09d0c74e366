"""`gencraft keys create|list|revoke`: API keys of the studio server (added to the `keys` group)."""

from __future__ import annotations

import typer
from rich.console import Console

from gencraft.cli.keys import keys_app

console = Console(highlight=False)


@keys_app.command("create")
def create_cmd(
    name: str = typer.Option("default", "--name", help="A label to recognise the key by."),
    rate: float = typer.Option(None, "--rate", help="Requests per minute for this key (default: the server's)."),
) -> None:
    """Create an API key for `gencraft serve` (shown once; only a salted hash is kept)."""
    from gencraft.server.auth import KeyStore

    rec, key = KeyStore().create(name, rate)
    console.print(key, markup=False, soft_wrap=True)
    Console(stderr=True, highlight=False).print(
        f"key id {rec.id} ({rec.name}); store it now -- it cannot be shown again", markup=False)


@keys_app.command("list")
def list_cmd() -> None:
    """List API keys (id, name, created, revoked, rate)."""
    from gencraft.server.auth import KeyStore

    recs = KeyStore().records()
    if not recs:
        console.print("no API keys; create one with `gencraft keys create`", markup=False)
    for r in recs:
        state = "revoked" if r.revoked else "active"
        rate = f"{r.rate_per_minute:g}/min" if r.rate_per_minute else "default rate"
        console.print(f"{r.id}  {r.name}  {r.created}  {state}  {rate}", markup=False)


@keys_app.command("revoke")
def revoke_cmd(key_id: str = typer.Argument(..., help="The key id (see `gencraft keys list`).")) -> None:
    """Revoke an API key (a running server refuses it from the next request)."""
    from gencraft.server.auth import KeyStore

    rec = KeyStore().revoke(key_id)
    console.print(f"revoked {rec.id} ({rec.name})", markup=False)


def register(app: typer.Typer) -> None:
    """The commands are added to the `keys` group when this module is imported; nothing else to do."""

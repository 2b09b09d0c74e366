"""`gencraft keys ...`: the signing key, watermark secret and C2PA certificate of this machine.

``keys_app`` is the ``keys`` group; other modules (the server's API keys) add their commands to it
by importing ``keys_app`` from here.
"""

from __future__ import annotations

import typer
from rich.console import Console

keys_app = typer.Typer(help="Signing and watermark keys (and API keys).", no_args_is_help=True)
console = Console(highlight=False)


@keys_app.command("init")
def init_cmd(
    force: bool = typer.Option(False, "--force", help="Replace existing keys (old signatures become untrusted)."),
    name: str = typer.Option("gencraft user", "--name", help="Organization name in the certificates."),
) -> None:
    """Create an Ed25519 signing key, a watermark secret, a local CA and a C2PA signing certificate."""
    from gencraft.guard.keys import init_keys

    keys = init_keys(force=force, name=name)
    console.print(f"keys written to {keys.folder} (owner-only permissions)", markup=False)
    console.print(f"key id: {keys.key_id}", markup=False)
    console.print("watermarks and signed manifests are now on for everything gencraft generates", markup=False)


@keys_app.command("show")
def show_cmd() -> None:
    """Print the key id and where the keys are."""
    from gencraft.guard.keys import load_keys

    keys = load_keys(required=True)
    console.print(f"key id: {keys.key_id}\nfolder: {keys.folder}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")

"""`gencraft keys ...`: the signing key, watermark secret and C2PA certificate of this machine.

``keys_app`` is the ``keys`` group; other modules (the server's API keys) add their commands to it
by importing ``keys_app`` from here.
"""

from __future__ import annotations

import typer
from rich.console import Console

from gencraft.io import write_text

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


@keys_app.command("export")
def export_cmd(out: str = typer.Argument(..., help="File to write this machine's public key to (hex).")) -> None:
    """Write this machine's public signing key, for others to `gencraft keys trust` it."""
    from gencraft.guard.keys import load_keys

    keys = load_keys(required=True)
    write_text(out, keys.public_raw.hex() + "\n")
    console.print(f"public key of key id {keys.key_id} written to {out}", markup=False)


@keys_app.command("trust")
def trust_cmd(
    file: str = typer.Argument(..., help="Someone's public key: a file from `gencraft keys export` (or their "
                                "signing.pub), a PEM public key or a PEM certificate."),
    name: str = typer.Option(None, "--name", help="Whose key it is (shown by verify; default: the file's name)."),
) -> None:
    """Trust a key: files it signed verify as valid here (exit 0) instead of 'unknown key' (exit 3)."""
    from gencraft.guard.keys import trust_key

    kid = trust_key(file, name)
    console.print(f"trusted key id {kid}", markup=False)


@keys_app.command("untrust")
def untrust_cmd(key_id: str = typer.Argument(..., help="A key id from `gencraft keys trusted`.")) -> None:
    """Remove a key from the trust list."""
    from gencraft.guard.keys import untrust_key

    untrust_key(key_id)
    console.print(f"key id {key_id} is no longer trusted", markup=False)


@keys_app.command("trusted")
def trusted_cmd() -> None:
    """List the keys this machine trusts (its own, and those added with `keys trust`)."""
    from gencraft.guard.keys import load_keys, trusted_keys

    own = load_keys()
    if own is not None:
        console.print(f"{own.key_id}  this machine", markup=False)
    for kid, rec in trusted_keys().items():
        console.print(f"{kid}  {rec.get('name')} (added {rec.get('added')})", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")

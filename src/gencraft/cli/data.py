"""`gencraft data ...`: turning sources into datasets. Other modules add sub-commands to ``data_app``."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Prepare datasets from your own files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")

"""The ``gencraft`` command. One module per command group; each exposes ``register(app)``.

:func:`main` is the entry point: a :class:`~gencraft.errors.GencraftError` becomes one line
on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import typer
from rich.console import Console

from gencraft.errors import GencraftError

try:  # typer >= 0.26 parses with its own vendored copy of click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer parses with click itself
    import click.exceptions as click_exc

app = typer.Typer(
    name="gencraft",
    help="gencraft: train generative models on your own material and generate with full control.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Command modules in the order their commands are listed in --help. Each defines register(app).
COMMAND_MODULES = [
    "gencraft.cli.quickstart",
    "gencraft.cli.data",
    "gencraft.cli.train",
    "gencraft.cli.runs",
    "gencraft.cli.generate",
    "gencraft.cli.export",
    "gencraft.cli.music",
    "gencraft.cli.speech",
    "gencraft.cli.vae",
    "gencraft.cli.image",
    "gencraft.cli.guard",
    "gencraft.cli.keys",
    "gencraft.cli.apikeys",
    "gencraft.cli.serve",
    "gencraft.cli.jobs",
    "gencraft.cli.write",
    "gencraft.cli.game",
    "gencraft.cli.ads",
    "gencraft.cli.library",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)

err = Console(stderr=True, highlight=False, soft_wrap=True)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(f"[yellow]warning:[/] {message}", markup=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and exits with) the exit code."""
    warnings.showwarning = _one_line_warning  # one line, no file/line noise
    try:
        rv = app(args=argv, prog_name="gencraft", standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool):  # typer.Exit(code) comes back as a value
            sys.exit(rv)
    except GencraftError as e:
        err.print(f"[bold red]error:[/] {e}", markup=True)
        sys.exit(2)
    except click_exc.UsageError as e:
        if e.format_message():  # (no_args_is_help has printed the help and says nothing more)
            err.print(f"[bold red]error:[/] {e.format_message()}", markup=True)
        sys.exit(2)
    except click_exc.ClickException as e:
        err.print(f"[bold red]error:[/] {e.format_message()}", markup=True)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(0)

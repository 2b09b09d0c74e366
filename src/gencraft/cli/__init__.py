"""The ``gencraft`` command. One module per command group; each exposes ``register(app)``.

:func:`main` is the entry point: a :class:`~gencraft.errors.GencraftError` becomes one line
on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings

import typer
from rich.console import Console
from rich.text import Text

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
    "gencraft.cli.tune",
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


def say(label: str, style: str, message: object) -> None:
    """One line on stderr: a coloured ``label`` and ``message`` as plain text. Messages name files and
    values the user gave (``/home/u/[draft]/a.txt``, ``[/]``): they are never read as Rich markup."""
    err.print(Text.assemble((label, style), " ", str(message)))


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    say("warning:", "yellow", message)


class _OneLineLog(logging.Handler):
    """gencraft's log warnings (``unsigned: no keys ...``, a library that cannot be written) as one line
    each on stderr, like Python warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        say(f"{record.levelname.lower()}:", "yellow" if record.levelno < logging.ERROR else "bold red",
            record.getMessage())


_log_handler = _OneLineLog(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and exits with) the exit code."""
    warnings.showwarning = _one_line_warning  # one line, no file/line noise
    if _log_handler not in logging.getLogger("gencraft").handlers:
        logging.getLogger("gencraft").addHandler(_log_handler)
    try:
        rv = app(args=argv, prog_name="gencraft", standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool):  # typer.Exit(code) comes back as a value
            sys.exit(rv)
    except GencraftError as e:
        say("error:", "bold red", e)
        sys.exit(2)
    except click_exc.UsageError as e:
        if e.format_message():  # (no_args_is_help has printed the help and says nothing more)
            say("error:", "bold red", e.format_message())
        sys.exit(2)
    except click_exc.ClickException as e:
        say("error:", "bold red", e.format_message())
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

"""The ``gencraft`` command. One module per command group; each exposes ``register(app)``.

:func:`main` is the entry point: a :class:`~gencraft.errors.GencraftError` becomes one line
on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

import typer
from rich.console import Console
from rich.text import Text

from gencraft.errors import GencraftError
from gencraft.train.metrics import StopRequested

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


def _shown(name: object, limit: int = 120) -> str:
    s = repr(os.fsdecode(name)) if isinstance(name, str | bytes) else str(name)
    return s if len(s) <= limit else s[:limit - 5] + "...'"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and exits with) the exit code.

    Exit codes: 0 done; 1 a check found something; 2 an error the user can fix (one line: a
    GencraftError, a bad argument, a file the system refused); 3 ``verify``: signed by an unknown
    key; 70 a bug in gencraft (one line; ``GENCRAFT_DEBUG=1`` shows the traceback); 130 stopped.
    """
    warnings.showwarning = _one_line_warning  # one line, no file/line noise
    if _log_handler not in logging.getLogger("gencraft").handlers:
        logging.getLogger("gencraft").addHandler(_log_handler)
    args = sys.argv[1:] if argv is None else list(argv)
    for i, a in enumerate(args):
        if "\x00" in str(a):  # no file name or text a shell can pass holds one
            say("error:", "bold red", f"argument {i + 1} ({_shown(a, 40)}) contains a NUL byte; remove it")
            sys.exit(2)
    try:
        rv = app(args=args, prog_name="gencraft", standalone_mode=False)
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
    except StopRequested as e:  # a signal stopped training after its checkpoint (train.autosave)
        err.print(str(e) or "stopped", markup=False)
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as e:  # the system refused a file the user named (too long, a folder, no permission...)
        if e.filename is None:
            raise
        to = f" -> {_shown(e.filename2)}" if e.filename2 else ""
        say("error:", "bold red", f"{_shown(e.filename)}: {e.strerror or e}{to}")
        sys.exit(2)
    except Exception as e:  # a bug: still one line for the user, the traceback on request
        if os.environ.get("GENCRAFT_DEBUG"):
            raise
        say("error:", "bold red", f"internal error ({type(e).__name__}: {str(e)[:300]}); please report it, "
            "with the traceback from GENCRAFT_DEBUG=1 gencraft ...")
        sys.exit(70)
    sys.exit(0)

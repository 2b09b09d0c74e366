"""Every command of the CLI, found in the typer app (so new commands are covered when they land), run
with a table of hostile arguments: empty strings, NUL bytes, 1 MB strings, paths with [brackets], spaces,
unicode, ``..``, missing and unreadable files, folders where files are expected and the reverse, and
numbers that are not numbers. Whatever happens, it is an exit code (0-3, or 130), and an error is one
line on stderr — never a traceback, and never exit 70 (``gencraft.cli.main``'s one line for a bug).

``make test`` runs every command with every hostile value in its arguments, and each option of each
command once, with a hostile value picked by a fixed rotation; ``-m slow`` runs every option with every
value (``pytest -m slow tests/test_hostile_cli.py``).
"""

from __future__ import annotations

import types
import typing
from pathlib import Path

import pytest
import typer
from test_robust import corpus
from test_server import make_image_run, make_text_run

from gencraft.cli import app

# commands that would do minutes of real work or serve forever on a harmless-looking value; their
# options are checked where they are parsed (ServerConfig, the quickstart's arguments) by their own tests
SKIP = {("serve",), ("quickstart",)}

# cheap settings for commands that do real work when their arguments are valid
BASE: dict[tuple[str, ...], list[str]] = {
    ("train",): ["--set", "max_iters=2", "--set", "eval_iters=1", "--set", "eval_interval=1000", "-q"],
    ("train-image",): ["--steps", "2", "--preset", "tiny", "-q"],
    ("generate",): ["-m", "3"],
    ("write", "continue"): ["--tokens", "3"],
    ("write", "draft"): ["--sections", "1", "--section-tokens", "3"],
    ("ads",): ["--n", "1", "--candidates", "1"],
    ("evaluate-image",): ["--n", "8"],
    ("guard", "memorization"): ["--prompts", "1", "--prefix", "2", "--suffix", "2"],
    ("game", "map"): ["--n", "1"],
    ("data", "speech-sample"): ["--n", "1"],
}
for kind in ("names", "npc", "quest", "item", "dialogue"):
    BASE[("game", kind)] = ["--n", "1"]


def leaf_commands() -> list[tuple[tuple[str, ...], typing.Any]]:
    """Every runnable command of the app as ``(path, click command)``."""
    out = []

    def walk(cmd, path: tuple[str, ...]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, (*path, name))
        else:
            out.append((path, cmd))

    walk(typer.main.get_command(app), ())
    return out


COMMANDS = [(p, c) for p, c in leaf_commands() if p not in SKIP]


def annotation(param) -> typing.Any:
    tp = param.type_descriptor.annotation
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) in (list, tuple):
        tp = typing.get_args(tp)[0]
    return tp


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real things for the arguments that are not under test: runs, datasets, files, folders."""
    from gencraft.data import prepare
    from gencraft.data.images import prepare_images

    d = tmp_path_factory.mktemp("world")
    text_run = make_text_run(d, "tiny", block_size=64)
    image_run = make_image_run(d, "pixels")
    (d / "corpus.txt").write_text("\n".join(corpus(60)), encoding="utf-8")
    ds = prepare([d / "corpus.txt"], d / "ds", license="CC0-1.0", unit="line")
    prepare_images("sklearn:digits", size=8, out=str(d / "digits"))
    unreadable = d / "unreadable.txt"
    unreadable.write_text("secret")
    unreadable.chmod(0)
    return {"text_run": text_run, "image_run": image_run, "dataset": ds, "image_dataset": d / "digits",
            "file": d / "corpus.txt", "dir": d, "unreadable": unreadable}


def hostile_values(world: dict[str, Path]) -> list[str]:
    return ["", "a\x00b", "x" * (1 << 20), str(world["dir"] / "[bold]odd[/] name.txt"), "two words here",
            "名字 🙂 ñ", "..", str(world["dir"] / "missing" / "nothing.txt"), str(world["unreadable"]),
            str(world["dir"]), str(world["file"] / "below-a-file")]


NUMBERS = ["nan", "inf", "-1", "0", "1e308", "99999999999999999999999", "1.5", "x"]


def plausible(path: tuple[str, ...], name: str, world: dict[str, Path], tmp: Path) -> list[str]:
    """A valid value for an argument that is not under test."""
    image = path in (("imagine",), ("evaluate-image",), ("game", "sprites"))
    if name in ("run", "model", "voice"):
        return [str(world["image_run"] if image else world["text_run"])]
    if name == "runs":
        return [str(world["text_run"]), str(world["text_run"])]
    if name == "dataset":
        return [str(world["image_dataset"] if path == ("train-image",) else world["dataset"])]
    if name in ("file", "sources", "source", "folder", "path"):
        return [str(world["file"])]
    if name in ("out",):
        return [str(tmp / "out.txt")]
    if name in ("key_id", "job_id", "item_id", "rating"):
        return ["1"]
    if name == "kind":
        return ["npc"]
    return ["hello"]


def check(cli, args: list[str], failures: list[str]) -> None:
    shown = " ".join(repr(a) if len(a) < 40 else repr(a[:37] + "...") for a in args)
    try:
        res = cli(*args)
    except Exception as e:  # escaped gencraft.cli.main: the user would have seen a traceback
        failures.append(f"{shown}: {type(e).__name__}: {str(e)[:200]}")
        return
    if res.code not in (0, 1, 2, 3, 130):  # 70: a bug, caught by main() as its last resort
        failures.append(f"{shown}: exit {res.code}: {res.err.strip()[-300:]}")
    elif "Traceback" in res.err:
        failures.append(f"{shown}: traceback {res.err[-300:]}")
    elif res.code == 2 and len([ln for ln in res.err.splitlines() if ln.strip() and not ln.startswith("warning:")]) != 1:
        failures.append(f"{shown}: error not one line: {res.err[:300]!r}")


def run_table(path, cmd, world, tmp, cli, *, every_value: bool) -> list[str]:
    failures: list[str] = []
    hostile = hostile_values(world)
    args_params = [p for p in cmd.params if p.param_type_name == "argument"]
    options = [p for p in cmd.params if p.param_type_name == "option" and not getattr(p, "is_flag", False)]
    base = BASE.get(path, [])
    # every hostile value in every positional argument
    if args_params:
        for h in hostile:
            check(cli, [*path, *[h for _ in args_params], *base], failures)
    valid_args = [v for p in args_params for v in plausible(path, p.name, world, tmp)]
    # each option with hostile values, the arguments valid
    for i, opt in enumerate(options):
        tp = annotation(opt)
        values = NUMBERS if tp in (int, float) else hostile
        if not every_value:  # make test: one value per option, by a fixed rotation over the table
            values = [values[(i + len(path[-1])) % len(values)]]
        for v in values:
            flag = opt.opts[0]
            n = opt.nargs if opt.nargs > 1 else 1
            check(cli, [*path, *valid_args, *base, flag, *([v] * n)], failures)
    return failures


IDS = [" ".join(p) for p, _ in COMMANDS]


@pytest.mark.parametrize("path, cmd", COMMANDS, ids=IDS)
def test_hostile_arguments(path, cmd, world, tmp_path: Path, cli, monkeypatch):
    monkeypatch.setenv("GENCRAFT_SERVER", "http://127.0.0.1:9")  # jobs commands: nothing listens there
    monkeypatch.chdir(tmp_path)  # commands that write beside the working folder write into the test's own
    failures = run_table(path, cmd, world, tmp_path, cli, every_value=False)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("path, cmd", COMMANDS, ids=IDS)
def test_hostile_arguments_every_value(path, cmd, world, tmp_path: Path, cli, monkeypatch):
    monkeypatch.setenv("GENCRAFT_SERVER", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)
    failures = run_table(path, cmd, world, tmp_path, cli, every_value=True)
    assert not failures, "\n".join(failures)

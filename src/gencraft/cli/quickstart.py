"""`gencraft quickstart`: the main job end to end on the sample corpus that ships with gencraft.

Prepares the corpus, trains a small GPT for about two minutes, prints samples and the next
commands. Everything goes under GENCRAFT_HOME.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel

console = Console(highlight=False)

PROMPTS = ["The Ember Kettle", "In the valley of", "The town council"]


def corpus_files() -> list[Path]:
    """The sample corpus files shipped inside the package (original text, CC0-1.0)."""
    root = resources.files("gencraft") / "assets" / "corpus"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".jsonl"))


def quickstart(
    minutes: float = typer.Option(2.0, "--minutes", help="Training budget in minutes."),
    name: str = typer.Option("quickstart", "--name", help="Dataset and run name under GENCRAFT_HOME."),
    seed: int = typer.Option(0, "--seed", help="Seed for data split, training and sampling."),
) -> None:
    """Prepare the bundled sample corpus, train a small GPT on it, and print samples."""
    import gencraft

    gencraft.use_thread_policy("train")  # mostly training; before torch loads
    from gencraft.backends import load
    from gencraft.data import prepare
    from gencraft.guard.copies import index_run
    from gencraft.paths import home, run_path
    from gencraft.train.loop import train

    console.rule("[bold]gencraft quickstart")
    console.print(f"Everything is written under [cyan]{home()}[/]\n")

    console.print("[bold]1. Prepare[/] the sample corpus (product blurbs, fantasy lore, short news)")
    ds = prepare(corpus_files(), out=name, tokenizer="char", field="text", license="CC0-1.0", seed=seed)

    console.print(f"\n[bold]2. Train[/] a small GPT for {minutes:g} minutes")
    previous = run_path(name)
    if (previous / "gencraft.json").is_file() or (previous / "checkpoints").is_dir():
        console.print(f"  (replacing the previous quickstart run at {previous})")
        shutil.rmtree(previous)
    run = train(ds, model="gpt", preset="small", out=name, max_time=minutes * 60, seed=seed,
                overrides=["eval_interval=100", "patience=0"])
    index_run(run, console.print)

    console.print("\n[bold]3. Generate[/] from the trained run")
    model = load(run)
    for prompt in PROMPTS:
        res = model.generate(prompt, max_new_tokens=160, temperature=0.8, top_k=40, seed=seed)
        console.print(Panel(prompt + res.text, title=f"prompt: {prompt!r}", expand=False))

    console.print("\n[bold]4. The content kits[/] on the same run (schema-constrained, so they validate)")
    _show_kits(model, seed)

    console.print("\n[bold]Next steps[/]")
    console.print(f"  gencraft generate {name} --prompt 'Your text' --temperature 0.8 --top-p 0.95")
    console.print(f"  gencraft evaluate {name}")
    console.print("  gencraft data prepare ~/my-writing --out mine --tokenizer bpe")
    console.print("  gencraft train mine --model gpt --preset small --out mine-gpt")
    console.print(f"  gencraft game npc {name} --n 3      gencraft ads {name} --product 'Your product'")
    console.print("  gencraft serve    (OpenAI-compatible API and the web studio at http://127.0.0.1:8000)")


def _show_kits(model, seed: int) -> None:
    """One output of each kit: writing assistant, game records and maps, ad variants."""
    import json

    from gencraft.apps import ads, game, maps, write

    piece = write.continue_text(model, "The Ember Kettle is", tokens=60, seed=seed)
    console.print(Panel(piece.text, title="gencraft write continue", expand=False))
    npc = game.generate(model, "npc", n=1, seed=seed)[0]
    console.print(Panel(json.dumps(npc.value, indent=2, ensure_ascii=False), title="gencraft game npc",
                        expand=False))
    examples = maps.load_maps([Path(str(resources.files("gencraft") / "assets" / "maps"))])
    tiles = maps.generate_map(examples, seed=seed)
    console.print(Panel(maps.render(tiles.grid), title=f"gencraft game map ({tiles.report})", expand=False))
    brief = ads.Brief(product="Ember Kettle", features=["keeps tea hot for hours", "cast iron"],
                      audience="tea lovers", channel="search")
    v = ads.generate(model, brief, n=1, seed=seed)[0]
    console.print(Panel(f"{v.headline}\n{v.description}\n[{v.cta}]", title="gencraft ads (search channel)",
                        expand=False))


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)

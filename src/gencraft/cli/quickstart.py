"""`gencraft quickstart`: the main job end to end on the sample corpus that ships with gencraft.

Prepares the corpus (byte-level BPE), trains a small GPT for about two minutes, prints samples and the next
commands. Everything goes under GENCRAFT_HOME.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

import gencraft
from gencraft.apps._common import release_policy
from gencraft.data import prepare
from gencraft.paths import home, run_path

console = Console(highlight=False)

PROMPTS = ["The Ember Kettle", "In the valley of", "The town council"]

# Measured on the bundled corpus (100 KB; 600 steps of the small GPT, ~2 minutes on 2 cores): characters
# reach 2.41 bits per character and babble ("plantudle burns"); a byte-level BPE of 1,024 tokens reaches
# 2.16 bits per character by step 450 and writes words, but with no dropout it memorizes the corpus
# after step 200 (2.20 -> 2.79), so the demo trains with dropout 0.2.
DEMO_VOCAB = 1024
DEMO_DROPOUT = 0.2


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
    gencraft.use_thread_policy("train")  # mostly training; before torch loads

    from gencraft.apps.text import generate as generate_text
    from gencraft.backends import load
    from gencraft.guard.copies import index_run
    from gencraft.train.loop import train

    console.rule("[bold]gencraft quickstart")
    console.print(f"Everything is written under [cyan]{escape(str(home()))}[/]\n")

    console.print("[bold]1. Prepare[/] the sample corpus (product blurbs, fantasy lore, short news)")
    ds = prepare(corpus_files(), out=name, tokenizer="bpe", vocab_size=DEMO_VOCAB, field="text", license="CC0-1.0",
                 seed=seed)

    console.print(f"\n[bold]2. Train[/] a small GPT for {minutes:g} minutes")
    previous = run_path(name)
    if (previous / "gencraft.json").is_file() or (previous / "checkpoints").is_dir():
        console.print(f"  (replacing the previous quickstart run at {previous})", markup=False)
        shutil.rmtree(previous)
    run = train(ds, model="gpt", preset="small", out=name, max_time=minutes * 60, seed=seed,
                overrides=["eval_interval=100", "patience=0", f"dropout={DEMO_DROPOUT}"])
    index_run(run, console.print)

    console.print("\n[bold]3. Generate[/] from the trained run (each output released: watermarked, signed "
                  "when you have keys, kept in the library)")
    model = load(run)
    with release_policy() as policy:
        for prompt in PROMPTS:
            [rel] = generate_text(model, prompt, policy=policy, max_new_tokens=60, temperature=0.8, top_k=40,
                                  seed=seed, name=name)
            _panel(prompt + rel.text, f"prompt: {prompt!r}")

        console.print("\n[bold]4. The content kits[/] on the same run (schema-constrained, so they validate)")
        _show_kits(model, name, seed, policy)

    console.print("\n[bold]Next steps[/]")
    console.print(f"  gencraft generate {name} --prompt 'Your text' --temperature 0.8 --top-p 0.95", markup=False)
    console.print(f"  gencraft evaluate {name}", markup=False)
    console.print("  gencraft data prepare ~/my-writing --out mine --tokenizer bpe")
    console.print("  gencraft train mine --model gpt --preset small --out mine-gpt")
    console.print(f"  gencraft game npc {name} --n 3      gencraft ads {name} --product 'Your product'",
                  markup=False)
    console.print("  gencraft serve    (OpenAI-compatible API and the web studio at http://127.0.0.1:8000)")


def _panel(body: str, title: str) -> None:
    """Generated text in a box, printed as it is (never read as Rich markup)."""
    console.print(Panel(Text(body), title=Text(title), expand=False))


def _show_kits(model, name: str, seed: int, policy) -> None:
    """One output of each kit, released: writing assistant, game records and maps, ad variants."""
    import json

    from gencraft.apps import ads, game, maps, write
    from gencraft.guard import release

    wm = policy.text_watermark(model.tokenizer.vocab_size)

    def released(text: str, label: str, **kw) -> str:
        return release(text, label=label, policy=policy, model=model, model_name=name, seed=seed,
                       watermark=wm, **kw).text

    piece = write.continue_text(model, "The Ember Kettle is", tokens=60, seed=seed, watermark=wm)
    _panel(released(piece.text, "write", params=piece.parameters, prompt="The Ember Kettle is"),
           "gencraft write continue")
    npc = game.generate(model, "npc", n=1, seed=seed, watermark=wm)[0]
    text = released(json.dumps(npc.value, ensure_ascii=False), "game.npc", params={"kind": "npc"})
    _panel(json.dumps(json.loads(text), indent=2, ensure_ascii=False), "gencraft game npc")
    examples = maps.load_maps([Path(str(resources.files("gencraft") / "assets" / "maps"))])
    grid_wm = policy.grid_watermark()
    tiles = maps.generate_map(examples, seed=seed, watermark=grid_wm)
    text = release(maps.render(tiles.grid), label="game.map", policy=policy, seed=seed,
                   params={"kind": "map", "seed": seed}, watermark=grid_wm).text
    _panel(text, f"gencraft game map ({tiles.report})")
    brief = ads.Brief(product="Ember Kettle", features=["keeps tea hot for hours", "cast iron"],
                      audience="tea lovers", channel="search")
    v = ads.generate(model, brief, n=1, seed=seed, watermark=wm)[0]
    released(v.text, "ads", params={"channel": "search", "product": brief.product}, prompt=brief.product)
    _panel(f"{v.headline}\n{v.description}\n[{v.cta}]", "gencraft ads (search channel)")


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)

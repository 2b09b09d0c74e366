"""`gencraft game names|npc|quest|item|dialogue|map|sprites`: the game content kit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from gencraft.apps._common import export, load_model, release_policy
from gencraft.cli.library import NO_STORE_HELP, say_stored
from gencraft.errors import DataError, UsageError


def _records(kind: str):
    def cmd(
        model: str = typer.Argument(..., help="Run name/path or hf:PATH."),
        n: int = typer.Option(5, "--n", "-n", help="How many records."),
        seed: int = typer.Option(0, "--seed", help="Same seed, same batch."),
        schema: Path = typer.Option(None, "--schema", help="Your own JSON Schema instead of the built-in one."),
        prompt: str = typer.Option(None, "--prompt", help="Override the prompt."),
        temperature: float = typer.Option(1.0, "--temperature", "-t"),
        nodes: int = typer.Option(4, "--nodes", help="Dialogue: number of nodes (2..8)."),
        out: Path = typer.Option(None, "--out", "-o", help="Write .json, .jsonl or .csv (default: JSON on stdout)."),
        no_store: bool = typer.Option(False, "--no-store", help=NO_STORE_HELP),
        voice: str = typer.Option(None, "--voice", help="Dialogue: speak every line (a tts run, or espeak: "
                                  "a voice per character) into WAVs beside --out."),
    ) -> None:
        from gencraft.apps import game

        if voice is not None and (kind != "dialogue" or out is None):
            raise UsageError("--voice: speaks dialogue lines; use it with `game dialogue` and --out FILE.json",
                             param="voice")
        if voice is not None:
            from gencraft.generate.speech import Speaker

            Speaker.load(voice)  # an unknown voice fails before anything is generated
        tm = load_model(model)
        with release_policy(store=not no_store) as policy:
            wm = policy.text_watermark(tm.tokenizer.vocab_size, temperature=temperature)
            recs = game.generate(tm, kind, n=n, seed=seed, schema=schema, prompt=prompt,
                                 temperature=temperature, nodes=nodes, watermark=wm)
            for i, r in enumerate(recs):
                for note in r.notes:
                    typer.echo(f"record {i}: {note}", err=True)
            released = game.release_records(recs, policy=policy, watermark=wm, model=tm, model_name=model,
                                            schema=schema, prompt=prompt, parameters={"n": n, "temperature": temperature,
                                                        "nodes": nodes if kind == "dialogue" else None})
            say_stored(released)
            if out is None:
                sys.stdout.write(json.dumps([json.loads(r.text) for r in released], ensure_ascii=False, indent=2)
                                 + "\n")
            else:
                game.export_records(recs, out, model=tm, policy=policy, watermark=wm, parameters={
                    "schema": str(schema) if schema else "built-in", "temperature": temperature,
                    "nodes": nodes if kind == "dialogue" else None, "prompt": prompt})
                typer.echo(f"wrote {len(recs)} {kind} records to {out}", err=True)
                if voice is not None:
                    from gencraft.apps.voiceover import voice_dialogue

                    folder = voice_dialogue([r.value for r in recs], voice, out, seed=seed, policy=policy)
                    typer.echo(f"spoke every line into {folder} (index {out.stem}.voice.json)", err=True)

    cmd.__doc__ = f"Generate {kind} records that validate against the {kind} JSON Schema."
    return cmd


def register(app: typer.Typer) -> None:
    g = typer.Typer(help="Game content kit: typed records, tile maps, sprites.", no_args_is_help=True)
    for kind in ("names", "npc", "quest", "item", "dialogue"):
        g.command(kind)(_records(kind))

    @g.command("schema")
    def schema_cmd(kind: str = typer.Argument(..., help="names, npc, quest, item or dialogue.")) -> None:
        """Print a built-in schema (start your own from it)."""
        from gencraft.apps import game

        sys.stdout.write(json.dumps(game.load_schema(kind), indent=2, ensure_ascii=False) + "\n")

    @g.command("map")
    def map_cmd(
        examples: list[Path] = typer.Option(..., "--examples", "-e", help="Example map files or folders (.txt)."),
        width: int = typer.Option(None, "--width", help="Default: the first example's width."),
        height: int = typer.Option(None, "--height"),
        n: int = typer.Option(1, "--n", "-n", help="How many maps."),
        seed: int = typer.Option(0, "--seed"),
        blocking: str = typer.Option("#~^T", "--blocking", help="Tiles that cannot be walked on."),
        max_carve: int = typer.Option(8, "--max-carve", help="Most wall tiles a repair may open."),
        out: Path = typer.Option(None, "--out", "-o", help="Write maps as .txt, or a .json/.csv report."),
        no_store: bool = typer.Option(False, "--no-store", help=NO_STORE_HELP),
    ) -> None:
        """Generate tile maps in the examples' style; each is checked playable (start-goal path)."""
        from gencraft import guard
        from gencraft.apps import maps

        grids = maps.load_maps(examples)
        sources = [str(p) for p in examples]
        params = {"kind": "map", "width": width, "height": height, "seed": seed, "blocking": blocking,
                  "max_carve": max_carve, "examples": sources}
        prompt = f"map from {', '.join(sources)}"[:2000]
        with release_policy(store=not no_store) as policy:
            wm = policy.grid_watermark()
            results = [maps.generate_map(grids, width=width, height=height, seed=seed + 1000 * i,
                                         blocking=blocking, max_carve=max_carve, watermark=wm) for i in range(n)]
            bad = [r for r in results if not r.playable]
            for r in results:
                typer.echo(f"seed {r.seed}: {'playable' if r.playable else 'NOT PLAYABLE'} -- {r.report}"
                           f"{f', carved {r.carved}' if r.carved else ''}; pattern coverage {r.coverage:.2f}",
                           err=True)
            good = [r for r in results if r.playable]
            released = [guard.release(r.text, kind="text", label="game.map", policy=policy, params={**params,
                                      "seed": r.seed}, seed=r.seed, prompt=prompt, watermark=wm, checks={
                                          "validation": {"valid": True, "playable": True, "report": r.report,
                                                         "carved": r.carved, "coverage": round(r.coverage, 4)}})
                        for r in good]
            if out is not None and good:
                if out.suffix.lower() in (".json", ".csv", ".jsonl"):  # the detector reads JSON maps back
                    export([r.to_dict() for r in good], out, kind="game.map", parameters=params, seed=seed,
                           policy=policy, watermark=None if out.suffix.lower() == ".csv" else wm)
                else:
                    guard.release("\n".join(rel.text for rel in released), kind="text", label="game.map",
                                  policy=policy, params=params, seed=seed, prompt=prompt, watermark=wm, out=out,
                                  store=False)
            elif good:
                sys.stdout.write("\n".join(rel.text for rel in released))
        say_stored(released)
        if bad:
            raise DataError(f"{len(bad)} of {n} maps could not be made playable ({bad[0].report}); "
                            "raise --max-carve, change --seed or give more open examples", param="examples")

    @g.command("check-map")
    def check_map_cmd(
        path: Path = typer.Argument(..., help="A map file (text grid)."),
        blocking: str = typer.Option("#~^T", "--blocking"),
    ) -> None:
        """Check that a map's start and goal are connected (exit 2 when not)."""
        from gencraft.apps import maps

        for grid in maps.load_maps([path]):
            rep = maps.check_playable(grid, blocking=blocking)
            if not rep.playable:
                raise DataError(f"{path}: not playable: {rep.reason}", param="map")
            typer.echo(f"{path}: playable, path length {rep.path_length}")

    @g.command("sprites")
    def sprites_cmd(
        run: str = typer.Argument(..., help="An image run (vae, dcgan or stylegan)."),
        n: int = typer.Option(8, "--n", "-n"),
        size: int = typer.Option(32, "--size", help="Sprite width and height in pixels."),
        palette: str = typer.Option("16", "--palette", help="A colour count, or #rrggbb,#rrggbb,..."),
        label: str = typer.Option(None, "--label", help="Class to sample (conditional runs)."),
        seed: int = typer.Option(0, "--seed"),
        out: Path = typer.Option(..., "--out", "-o", help="Folder for sprite_000.png ..."),
        no_store: bool = typer.Option(False, "--no-store", help=NO_STORE_HELP),
    ) -> None:
        """Sprites from an image run, reduced to the game's palette and size (PNG with provenance)."""
        from gencraft import guard
        from gencraft.apps import game
        from gencraft.runs import read_info

        imgs = game.sprites(run, n=n, seed=seed, size=size, palette=palette, label=label)
        out.mkdir(parents=True, exist_ok=True)
        _, info = read_info(run)
        with release_policy(store=not no_store) as policy:
            released = [guard.release(im, kind="image", label="game.sprite", policy=policy, run_info=info,
                                      model_name=run, params={"n": n, "size": size, "palette": palette,
                                                              "label": label, "index": i, "kind": "sprite"},
                                      seed=seed, prompt=label or "sprite", out=out / f"sprite_{i:03d}.png")
                        for i, im in enumerate(imgs)]
        typer.echo(f"wrote {len(imgs)} sprites to {out}", err=True)
        say_stored(released)

    app.add_typer(g, name="game")

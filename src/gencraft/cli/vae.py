"""`gencraft vae interpolate RUN "text A" "text B"` and `gencraft vae vary RUN "text"`: the latent
space of a text VAE run (``gencraft train DATASET --model text_vae``)."""

from __future__ import annotations

import typer

vae_app = typer.Typer(help="Explore a text VAE's latent space: interpolate between texts, vary one.",
                      no_args_is_help=True)


def _load(run: str):
    from gencraft.tokenize import load_tokenizer
    from gencraft.train.text_vae import load_text_vae

    model, info, path = load_text_vae(run)
    return model, load_tokenizer(path / "tokenizer.json")


@vae_app.command("interpolate")
def interpolate_cmd(
    run: str = typer.Argument(..., help="A text_vae run."),
    text_a: str = typer.Argument(..., help="Start text."),
    text_b: str = typer.Argument(..., help="End text."),
    steps: int = typer.Option(8, "--steps", help="Points on the line from A to B, ends included."),
) -> None:
    """Decode evenly spaced points between the latent codes of two texts."""
    from gencraft.errors import UsageError
    from gencraft.generate.latent import interpolate

    if not 2 <= steps <= 100:
        raise UsageError(f"--steps {steps}: must be between 2 and 100", param="steps")
    model, tok = _load(run)
    for i, text in enumerate(interpolate(model, tok, text_a, text_b, steps)):
        typer.echo(f"{i / (steps - 1):.2f}\t{text}")


@vae_app.command("vary")
def vary_cmd(
    run: str = typer.Argument(..., help="A text_vae run."),
    text: str = typer.Argument(..., help="The text to vary."),
    n: int = typer.Option(5, "--n", help="How many variations."),
    radius: float = typer.Option(0.5, "--radius", help="Distance from the text's code, in prior standard deviations."),
    seed: int = typer.Option(0, "--seed"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy decoding of each code."),
) -> None:
    """Decode codes drawn around a text's latent code."""
    from gencraft.errors import UsageError
    from gencraft.generate.latent import vary

    if not 1 <= n <= 100:
        raise UsageError(f"--n {n}: must be between 1 and 100", param="n")
    if not 0 <= radius <= 10:
        raise UsageError(f"--radius {radius}: must be between 0 and 10", param="radius")
    if temperature < 0:
        raise UsageError(f"--temperature {temperature}: must not be negative", param="temperature")
    model, tok = _load(run)
    for line in vary(model, tok, text, n, radius, seed, temperature):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.add_typer(vae_app, name="vae")

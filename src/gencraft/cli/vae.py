"""`gencraft vae interpolate RUN "text A" "text B"` and `gencraft vae vary RUN "text"`: the latent
space of a text VAE run (``gencraft train DATASET --model text_vae``)."""

from __future__ import annotations

import typer

from gencraft.apps._common import release_policy
from gencraft.cli.library import NO_STORE_HELP, say_stored
from gencraft.errors import UsageError
from gencraft.tokenize import load_tokenizer

vae_app = typer.Typer(help="Explore a text VAE's latent space: interpolate between texts, vary one.",
                      no_args_is_help=True)


def _load(run: str):
    from gencraft.train.text_vae import load_text_vae

    model, info, path = load_text_vae(run)
    return model, load_tokenizer(path / "tokenizer.json"), info, path


def _release(decode, tok, *, run: str, info: dict, path, prompt: str, params: dict, seed: int | None,
             store: bool, temperature: float = 0.0) -> list[str]:
    """The texts ``decode(options)`` makes, each through the release step (moderation, copy check,
    watermark, signed manifest, library), as every output of gencraft; the texts as released (masked
    where the policy masks). Sampled codes draw through the watermark's sampler; greedy decoding makes
    no draw to mark, and then the manifests say none."""
    from gencraft import guard

    with release_policy(store=store) as policy:
        wm = policy.text_watermark(tok.vocab_size, temperature=temperature)
        texts = decode(guard.watermark_options(wm))
        released = [guard.release(t, kind="text", label="vae", policy=policy, model=str(path), run_info=info,
                                  model_name=run, params={**params, "index": i}, seed=seed, prompt=prompt,
                                  watermark=wm)
                    for i, t in enumerate(texts)]
    say_stored(released)
    return [r.text for r in released]


@vae_app.command("interpolate")
def interpolate_cmd(
    run: str = typer.Argument(..., help="A text_vae run."),
    text_a: str = typer.Argument(..., help="Start text."),
    text_b: str = typer.Argument(..., help="End text."),
    steps: int = typer.Option(8, "--steps", help="Points on the line from A to B, ends included."),
    no_store: bool = typer.Option(False, "--no-store", help=NO_STORE_HELP),
) -> None:
    """Decode evenly spaced points between the latent codes of two texts."""
    from gencraft.generate.latent import interpolate

    if not 2 <= steps <= 100:
        raise UsageError(f"--steps {steps}: must be between 2 and 100", param="steps")
    model, tok, info, path = _load(run)
    texts = _release(lambda options: interpolate(model, tok, text_a, text_b, steps), tok, run=run, info=info,
                     path=path,
                     prompt=f"{text_a}\n{text_b}", params={"mode": "interpolate", "steps": steps}, seed=None,
                     store=not no_store)
    for i, text in enumerate(texts):
        typer.echo(f"{i / (steps - 1):.2f}\t{text}")


@vae_app.command("vary")
def vary_cmd(
    run: str = typer.Argument(..., help="A text_vae run."),
    text: str = typer.Argument(..., help="The text to vary."),
    n: int = typer.Option(5, "--n", help="How many variations."),
    radius: float = typer.Option(0.5, "--radius", help="Distance from the text's code, in prior standard deviations."),
    seed: int = typer.Option(0, "--seed"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy decoding of each code."),
    no_store: bool = typer.Option(False, "--no-store", help=NO_STORE_HELP),
) -> None:
    """Decode codes drawn around a text's latent code."""
    from gencraft.generate.latent import vary

    if not 1 <= n <= 100:
        raise UsageError(f"--n {n}: must be between 1 and 100", param="n")
    if not 0 <= radius <= 10:
        raise UsageError(f"--radius {radius}: must be between 0 and 10", param="radius")
    if temperature < 0:
        raise UsageError(f"--temperature {temperature}: must not be negative", param="temperature")
    model, tok, info, path = _load(run)
    for line in _release(lambda options: vary(model, tok, text, n, radius, seed, temperature, options), tok,
                         run=run, info=info, path=path, prompt=text,
                         params={"mode": "vary", "n": n, "radius": radius, "temperature": temperature},
                         seed=seed, store=not no_store, temperature=temperature):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.add_typer(vae_app, name="vae")

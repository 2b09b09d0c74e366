"""`gencraft ads MODEL`: ad copy variants within each channel's limits, ranked, exported as CSV."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from gencraft.errors import UsageError


def ads_cmd(
    model: str = typer.Argument(..., help="Run name/path or hf:PATH."),
    brief: Path = typer.Option(None, "--brief", help="Brief JSON: product, features, audience, tone, channel..."),
    product: str = typer.Option(None, "--product", help="Product or brand name (a required term by default)."),
    feature: list[str] = typer.Option([], "--feature", help="A product feature (repeatable)."),
    audience: str = typer.Option(None, "--audience"),
    tone: str = typer.Option(None, "--tone"),
    channel: str = typer.Option(None, "--channel", help="search, display, social, facebook, linkedin, or yours."),
    channels: Path = typer.Option(None, "--channels", help="JSON with extra/overridden channel limits."),
    required: list[str] = typer.Option([], "--required", help="A term every variant must contain (repeatable)."),
    banned: list[str] = typer.Option([], "--ban", help="A term no variant may contain (adds to the defaults)."),
    voice: str = typer.Option(None, "--voice", help="Brand-voice run (scores closeness to the brand's copy)."),
    n: int = typer.Option(5, "--n", "-n", help="Variants to return."),
    candidates: int = typer.Option(None, "--candidates", help="Candidates to sample before ranking (3n)."),
    seed: int = typer.Option(0, "--seed"),
    temperature: float = typer.Option(1.0, "--temperature", "-t"),
    image: str = typer.Option(None, "--image", help="Image run: compose 1200x628 and 1080x1080 ad images."),
    out: Path = typer.Option(None, "--out", "-o", help="CSV (ad-platform columns) or JSON; images go beside it."),
) -> None:
    """Ad variants (headline, description, call to action) from a brief, ranked with scores shown."""
    from gencraft.apps import ads
    from gencraft.apps._common import export

    if brief is not None:
        b = ads.Brief.from_file(brief)
    elif product:
        b = ads.Brief(product=product)
    else:
        raise UsageError("give --brief FILE.json or at least --product", param="brief")
    if product:
        b.product = product
    b.features = list(feature) or b.features
    b.audience = audience or b.audience
    b.tone = tone or b.tone
    b.channel = channel or b.channel
    if required:
        b.required = list(required)
    b.banned = list(dict.fromkeys([*b.banned, *banned]))
    from gencraft.apps._common import load_model

    tm = load_model(model)
    variants = ads.generate(tm, b, n=n, seed=seed, candidates=candidates, voice=voice, channels=channels,
                            temperature=temperature)
    lim = ads.channel_table(channels)[b.channel]
    typer.echo(f"{b.channel}: headline <= {lim['headline']}, description <= {lim['description']}, "
               f"cta <= {lim['cta']} characters", err=True)
    for i, v in enumerate(variants, 1):
        sc = "  ".join(f"{k}={val:.3f}" for k, val in v.scores.items())
        typer.echo(f"#{i} [{sc}]\n  headline:    {v.headline}\n  description: {v.description}\n"
                   f"  cta:         {v.cta}", err=True)
    if out is None:
        sys.stdout.write(json.dumps([v.to_dict() for v in variants], ensure_ascii=False, indent=2) + "\n")
    elif out.suffix.lower() == ".csv":
        ads.export_csv(variants, out, b, channels=channels, model=tm, seed=seed)
    else:
        export([v.to_dict() for v in variants], out, model=tm, kind="ads/copy", seed=seed,
               parameters={"channel": b.channel, "product": b.product, "n": n})
    if image is not None:
        from gencraft.apps._common import image_artifact
        from gencraft.train.rundir import read_info

        folder = (out.parent if out is not None else Path(".")) / "ad_images"
        folder.mkdir(parents=True, exist_ok=True)
        _, info = read_info(image)
        for img, params in ads.ad_images(image, variants, seed=seed):
            v = variants[params["variant"]]
            image_artifact(folder / f"ad_{params['variant'] + 1:02d}_{params['size']}.png", img, run_info=info,
                           kind="image/ad", seed=seed,
                           parameters={**params, "headline": v.headline, "cta": v.cta, "channel": v.channel})
        typer.echo(f"wrote ad images to {folder}", err=True)


def register(app: typer.Typer) -> None:
    app.command("ads")(ads_cmd)

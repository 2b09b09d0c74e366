"""`gencraft ads MODEL`: ad copy variants within each channel's limits, ranked, exported as CSV."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from gencraft.apps._common import export, load_model, release_policy
from gencraft.cli.library import NO_STORE_HELP, say_stored
from gencraft.errors import UsageError


def ads_cmd(
    model: str = typer.Argument(..., help="Run name/path or hf:PATH."),
    brief: Path = typer.Option(None, "--brief", help="Brief JSON: product, features, audience, tone, channel..."),
    product: str = typer.Option(None, "--product", help="Product or brand name (a required term by default)."),
    feature: list[str] = typer.Option([], "--feature", help="A product feature (repeatable)."),
    audience: str = typer.Option(None, "--audience"),
    tone: str = typer.Option(None, "--tone"),
    channel: str = typer.Option(None, "--channel", help="search, display, social, facebook, linkedin, audio, or yours."),
    channels: Path = typer.Option(None, "--channels", help="JSON with extra/overridden channel limits."),
    required: list[str] = typer.Option([], "--required", help="A term every variant must contain (repeatable)."),
    banned: list[str] = typer.Option([], "--ban", help="A term no variant may contain (adds to the defaults)."),
    voice: str = typer.Option(None, "--voice", help="Brand-voice run (scores closeness to the brand's copy); with "
                              "--channel audio: the speaking voice (a tts run or espeak) of the 15/30 s spots."),
    n: int = typer.Option(5, "--n", "-n", help="Variants to return."),
    candidates: int = typer.Option(None, "--candidates", help="Candidates to sample before ranking (3n)."),
    seed: int = typer.Option(0, "--seed"),
    temperature: float = typer.Option(1.0, "--temperature", "-t"),
    image: str = typer.Option(None, "--image", help="Image run: compose 1200x628 and 1080x1080 ad images."),
    out: Path = typer.Option(None, "--out", "-o", help="CSV (ad-platform columns) or JSON; images go beside it."),
    rank_by_ratings: bool = typer.Option(True, "--rank-by-ratings/--no-rank-by-ratings",
                                         help="Put variants like the ads you rated up in the library first."),
    no_store: bool = typer.Option(False, "--no-store", help=NO_STORE_HELP),
) -> None:
    """Ad variants (headline, description, call to action) from a brief, ranked with scores shown."""
    from gencraft.apps import ads

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
    from gencraft import guard

    tm = load_model(model)
    speaker = None
    if b.channel == "audio":  # --voice is the speaking voice (a tts run or espeak), not a brand-voice text run
        from gencraft.apps.voiceover import is_speech_voice

        speaker = voice if voice and is_speech_voice(voice) else "espeak"
        voice = None if voice and is_speech_voice(voice) else voice
    with release_policy(store=not no_store) as policy:
        wm = policy.text_watermark(tm.tokenizer.vocab_size, temperature=temperature)
        variants = ads.generate(tm, b, n=n, seed=seed, candidates=candidates, voice=voice, channels=channels,
                                temperature=temperature, rank_by_ratings=rank_by_ratings, watermark=wm)
        if any("preference" in v.scores for v in variants):
            typer.echo("ranked toward the ads you rated in the library (the preference score)", err=True)
        lim = ads.channel_table(channels)[b.channel]
        typer.echo(f"{b.channel}: headline <= {lim['headline']}, description <= {lim['description']}, "
                   f"cta <= {lim['cta']} characters", err=True)
        common = {"channel": b.channel, "product": b.product, "n": n, "candidates": candidates, "seed": seed,
                  "temperature": temperature, "voice": voice}
        released = ads.release_variants(variants, b, policy=policy, model=tm, model_name=model, parameters=common,
                                        seed=seed, channels=channels, watermark=wm)
        for i, v in enumerate(variants, 1):
            sc = "  ".join(f"{k}={val:.3f}" for k, val in v.scores.items())
            typer.echo(f"#{i} [{sc}]\n  headline:    {v.headline}\n  description: {v.description}\n"
                       f"  cta:         {v.cta}", err=True)
        if out is None:
            sys.stdout.write(json.dumps([v.to_dict() for v in variants], ensure_ascii=False, indent=2) + "\n")
        elif out.suffix.lower() == ".csv":
            ads.export_csv(variants, out, b, channels=channels, model=tm, seed=seed, policy=policy, watermark=wm)
        else:
            export([v.to_dict() for v in variants], out, model=tm, kind="ads.copy", seed=seed, policy=policy,
                   watermark=wm, parameters={"channel": b.channel, "product": b.product, "n": n})
        if image is not None:
            from gencraft.runs import read_info

            folder = (out.parent if out is not None else Path(".")) / "ad_images"
            folder.mkdir(parents=True, exist_ok=True)
            _, info = read_info(image)
            for img, params in ads.ad_images(image, variants, seed=seed):
                v = variants[params["variant"]]
                params = {**common, **params, "headline": v.headline, "cta": v.cta, "channel": v.channel}
                released.append(guard.release(
                    img, kind="image", label="ads.image", policy=policy, run_info=info, model_name=image,
                    params=params, seed=seed, prompt=b.product,
                    out=folder / f"ad_{params['variant'] + 1:02d}_{params['size']}.png"))
            typer.echo(f"wrote ad images to {folder}", err=True)
        if speaker is not None:
            from gencraft.apps.voiceover import audio_spots

            spots = audio_spots(variants, speaker, out if out is not None else Path("spot.wav"), seed=seed,
                                policy=policy)
            for s in spots:
                typer.echo(f"spot {s['variant'] + 1} ({s['seconds']:g} s): " + (
                    f"{s['file']} (speech {s['spoken_seconds']:.1f} s at {s['speed']:g}x)" if s["file"]
                    else s["note"]), err=True)
    say_stored(released)


def register(app: typer.Typer) -> None:
    app.command("ads")(ads_cmd)

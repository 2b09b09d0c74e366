"""`gencraft data images`, `gencraft train-image`, `gencraft imagine`, `gencraft evaluate-image`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gencraft.apps._common import release_policy
from gencraft.cli.data import data_app
from gencraft.cli.library import say_stored
from gencraft.config import Range, check_value
from gencraft.data.images import prepare_images
from gencraft.errors import UsageError
from gencraft.io import write_json
from gencraft.post import image as pi

out_console = Console(highlight=False, soft_wrap=True, markup=False)  # paths and names print as given
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def data_images(
    source: Annotated[str, typer.Argument(help="A folder of images (sub-folders = classes) or sklearn:digits.")],
    out: Annotated[str | None, typer.Option("--out", help="Dataset name or path (default: the folder's name).")] = None,
    size: Annotated[int, typer.Option("--size", help="Side in pixels, 8 to 128.")] = 32,
    fit: Annotated[str, typer.Option("--fit", help="crop (fill the square) or pad (keep all of the picture).")] = "crop",
    background: Annotated[str, typer.Option("--background", help="Colour behind transparency and padding.")] = "#ffffff",
    channels: Annotated[str, typer.Option("--channels", help="auto, gray or rgb.")] = "auto",
    license: Annotated[str | None, typer.Option("--license", help="License of the images (default: LICENSE file or unknown).")] = None,
) -> None:
    """Prepare an image dataset (PNG, JPEG, WebP, BMP, GIF) for train-image."""
    m = prepare_images(source, size=size, out=out, fit=fit, background=background, channels=channels, license=license)
    classes = m["classes"]
    out_console.print(f"{m['images']} images of {'x'.join(map(str, m['shape']))} -> {m['path']}"
                      + (f" ({len(classes)} classes: {', '.join(classes[:10])}{'...' if len(classes) > 10 else ''})" if classes else ""))
    for s in m["skipped"]:
        err_console.print(f"skipped {s['path']}: {s['reason']}")


def train_image_cmd(
    dataset: Annotated[str, typer.Argument(help="Image dataset name or path (from `gencraft data images`).")],
    model: Annotated[str, typer.Option("--model", help="vae, dcgan or stylegan.")] = "dcgan",
    preset: Annotated[str, typer.Option("--preset", help="tiny, small or base.")] = "small",
    out: Annotated[str | None, typer.Option("--out", help="Run name or path.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Training steps (minibatches).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's checkpoints/last.")] = False,
    max_time: Annotated[float | None, typer.Option("--max-time", help="Stop after this many seconds (checkpoint kept).")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config field: key=value (repeatable).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    checkpoint_every: Annotated[str | None, typer.Option("--checkpoint-every", help="Also save the resumable "
                                "checkpoint every this much wall time: 300, 90s, 5m, 1h; 0 = off (default 5m).")] = None,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads for torch (0 = torch's default; 1 is faster on a busy machine).")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto (CUDA when there is one).")] = "cpu",
) -> None:
    """Train a VAE, DCGAN or StyleGAN on an image dataset."""
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from gencraft.train.image import train_image

    if threads < 0:
        raise UsageError(f"--threads {threads}: expected 0 (default) or more", param="threads")
    if checkpoint_every is not None:
        from gencraft.train.autosave import parse_every

        set_ = [*(set_ or []), f"checkpoint_every={parse_every(checkpoint_every)}"]
    if threads:
        torch.set_num_threads(threads)
    if quiet:
        info = train_image(dataset, model, out=out, preset=preset, overrides=set_, resume=resume, max_time=max_time,
                           seed=seed, steps=steps, overwrite=overwrite, device=device)
    else:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=err_console, transient=True) as bar:
            task = bar.add_task(model, total=None, stats="")

            def progress(step: int, total: int, stats: dict[str, float]) -> None:
                if step % 10 == 0 or step == total:
                    s = " ".join(f"{k}={v:.3g}" for k, v in stats.items() if k in ("loss", "loss_d", "loss_g", "bpd"))
                    bar.update(task, completed=step, total=total, stats=s)

            info = train_image(dataset, model, out=out, preset=preset, overrides=set_, resume=resume,
                               max_time=max_time, seed=seed, steps=steps, overwrite=overwrite, progress=progress,
                               device=device)
    m = info.get("metrics", {})
    floor = m.get("floor", {})
    msg = (f"{info['kind']} run {info['run_id'][:8]}: best FID-proxy {m.get('fid', float('nan')):.3g} "
           f"(real-data floor {floor.get('fid', float('nan')):.3g}) at step {m.get('best_step')}/{m.get('step')}")
    if "cond_acc" in m:
        msg += f", conditional accuracy {m['cond_acc']:.1%}"
    if "nelbo" in m:
        msg += f", negative ELBO {m['nelbo']:.1f} nats ({m['bpd']:.3f} bits/dim)"
    out_console.print(msg)


def imagine(
    run: Annotated[str, typer.Argument(help="An image run (vae, dcgan or stylegan).")],
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 16,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    truncation: Annotated[float, typer.Option("--truncation", help="1 = none; smaller = more typical, less varied.")] = 1.0,
    label: Annotated[str | None, typer.Option("--label", help="Class name (conditional models).")] = None,
    out: Annotated[str, typer.Option("--out", help="Output PNG (or GIF for --interpolate).")] = "imagine.png",
    separate: Annotated[bool, typer.Option("--separate", help="One file per image (OUT_000.png ...) instead of a grid.")] = False,
    interpolate: Annotated[tuple[int, int] | None, typer.Option("--interpolate", help="Two seeds A B: latent walk as an animated GIF.")] = None,
    frames: Annotated[int, typer.Option("--frames")] = 16,
    mix: Annotated[tuple[int, int] | None, typer.Option("--mix", help="StyleGAN: coarse-style seed and fine-style seed.")] = None,
    reconstruct: Annotated[Path | None, typer.Option("--reconstruct", help="VAE: encode and decode this image.")] = None,
    upscale: Annotated[int, typer.Option("--upscale", help="Enlarge each image by this factor.")] = 1,
    resample: Annotated[str, typer.Option("--resample", help="auto, nearest (pixel art) or lanczos.")] = "auto",
    colors: Annotated[int | None, typer.Option("--colors", help="Quantize to this many colours.")] = None,
    transparent: Annotated[str | None, typer.Option("--transparent", help="Background colour to make transparent (or auto).")] = None,
    no_watermark: Annotated[bool, typer.Option("--no-watermark", help="Do not watermark (the manifest says so).")] = False,
    no_store: Annotated[bool, typer.Option("--no-store", help="Don't keep the images in the content library.")] = False,
) -> None:
    """Generate images from an image run: a grid, separate files, an interpolation GIF, style mixing or a reconstruction."""
    import numpy as np

    from gencraft import guard
    from gencraft.generate import image as gi
    from gencraft.limits import check_image_output

    check_value("--n", n, Range(1, 4096), integer=True)
    check_value("--upscale", upscale, Range(1, 1 << 16), integer=True)
    check_value("--frames", frames, Range(2, 4096), integer=True)
    check_value("--truncation", truncation, Range(0, 10))
    r = gi.load_image_run(run)
    side = int(r.model.cfg.img_size)
    count = frames if interpolate is not None else min(n, 8) * 2 if mix is not None else n
    check_image_output(count, side, int(r.model.cfg.channels), upscale)
    lab = gi.label_index(r, label)
    params = {"n": n, "truncation": truncation, "label": label, "upscale": upscale, "colors": colors,
              "transparent": transparent}

    def post(img: np.ndarray) -> np.ndarray:
        img = pi.upscale(img, upscale, resample)
        if colors:
            img = pi.quantize(img, colors)
        if transparent:
            img = pi.background_to_alpha(img, transparent)
        return img

    dest = Path(out)
    with release_policy(watermark=not no_watermark, store=not no_store) as policy:
        def release(content, kind: str, path: Path, extra: dict) -> guard.Released:
            return guard.release(content, kind=kind, label="image", policy=policy, model=r, model_name=run,
                                 params={**params, **extra}, seed=seed, prompt=label, out=path)

        if interpolate is not None:
            frames_u8 = gi.interpolate(r, interpolate[0], interpolate[1], frames, truncation=truncation, label=lab)
            if dest.suffix.lower() != ".gif":
                dest = dest.with_suffix(".gif")
            rel = release([pi.to_pil(post(f)) for f in frames_u8], "animation", dest,
                          {"interpolate": list(interpolate), "frames": frames})
            out_console.print(f"{frames} frames -> {dest} (+ {dest.name}.manifest.json)")
            say_stored([rel])
            return
        if mix is not None:
            images = gi.style_mix(r, mix[0], mix[1], n=min(n, 8), truncation=truncation, label=lab)
            params["mix"] = list(mix)
            nrow = min(n, 8) + 1
        elif reconstruct is not None:
            images = gi.reconstruct(r, reconstruct, lab)
            params["reconstruct"] = str(reconstruct)
            nrow = 2
        else:
            images = gi.sample_images(r, n, seed=seed, truncation=truncation, label=lab)
            nrow = None
        processed = [post(im) for im in images]
        if separate:
            stem = dest.with_suffix("")
            released = [release(pi.to_pil(im), "image", Path(f"{stem}_{i:03d}.png"), {"index": i})
                        for i, im in enumerate(processed)]
            out_console.print(f"{len(processed)} images -> {stem}_000.png ... {stem}_{len(processed) - 1:03d}.png")
        else:
            released = [release(pi.to_pil(pi.make_grid(np.stack(processed), nrow=nrow)), "image", dest, {})]
            out_console.print(f"{len(processed)} images -> {dest}")
    say_stored(released)


def evaluate_image(
    run: Annotated[str, typer.Argument(help="An image run.")],
    n: Annotated[int | None, typer.Option("--n", help="Samples to score (default: the held-out split's size).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 1234,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures (and per-sample nn distances) here.")] = None,
) -> None:
    """Measure an image run with the FID-proxy (features of a classifier gencraft trains on the dataset)."""
    from gencraft.train.image_eval import evaluate_run

    res = evaluate_run(run, n=n, seed=seed)
    m, f = res["model"], res["floor"]
    out_console.print(f"FID-proxy evaluation of {res['run']} ({res['kind']}, {res['n_samples']} samples vs "
                      f"{res['n_reference']} held-out images; feature net: {res['feature_task']} classifier)")
    out_console.print(f"{'metric':<16}{'model':>10}{'real floor':>12}")
    for k in ("fid", "kid", "precision", "recall", "cond_acc", "nn_dist_mean", "nn_dist_min"):
        if k in m:
            out_console.print(f"{k:<16}{m[k]:>10.4g}{f.get(k, float('nan')):>12.4g}")
    if "fid" in m and f.get("fid"):
        out_console.print(f"FID-proxy ratio to the floor: {m['fid'] / f['fid']:.2f}")
    if json_out is not None:
        write_json(json_out, res)


def register(app: typer.Typer) -> None:
    data_app.command("images")(data_images)
    app.command("train-image")(train_image_cmd)
    app.command("imagine")(imagine)
    app.command("evaluate-image")(evaluate_image)

"""Image benchmark: VAE, DCGAN and StyleGAN on sklearn:digits at 16x16 (FID-proxy, see docs).

    .venv/bin/python bench/images.py                 # 10 minutes per model (the issue's budget)
    .venv/bin/python bench/images.py --minutes 3 --models dcgan,stylegan

Every figure is printed beside the real-data floor (two disjoint parts of the real data) and
the calibration bar (a throwaway 60-line conditional DCGAN: FID-proxy 11.3 vs floor 12.1, ratio
0.93, 99% conditional accuracy after 4 minutes on 2 cores). FID-proxy values depend on the
feature net, so compare *ratios to the floor*, not raw values, with the calibration bar.
The checkpoint reported is the one selected by FID-proxy on the held-out split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

CALIBRATION = {"fid_ratio": 0.93, "cond_acc": 0.99, "minutes": 4}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per model (default 10)")
    ap.add_argument("--models", default="vae,dcgan,stylegan")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--set", action="append", default=[], help="key=value override for every model")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    os.environ.setdefault("GENCRAFT_HOME", tempfile.mkdtemp(prefix="gencraft-bench-"))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from gencraft.data.images import load_image_dataset, prepare_images
    from gencraft.generate.image import load_image_run
    from gencraft.models.image_common import to_uint8
    from gencraft.train.image import train_image
    from gencraft.train.image_eval import Evaluator

    prepare_images("sklearn:digits", size=16, out="digits16")
    ds = load_image_dataset("digits16")
    ev = Evaluator.for_dataset(ds)
    floor = ev.floor
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, GENCRAFT_HOME {os.environ['GENCRAFT_HOME']}")
    print(f"held-out split: {ev.n_samples} images; samples per evaluation: {ev.n_samples}")
    results = {}
    for kind in args.models.split(","):
        t0 = time.time()
        info = train_image("digits16", kind, out=f"bench-{kind}", preset=args.preset, steps=10**7,
                           max_time=args.minutes * 60, seed=args.seed, overwrite=True,
                           overrides=[f"eval_every={args.eval_every}", f"sample_every={args.eval_every * 4}", *args.set])
        wall = time.time() - t0
        m = info["metrics"]
        from gencraft.io import read_jsonl
        from gencraft.paths import run_path

        logs = read_jsonl(run_path(f"bench-{kind}") / "metrics.jsonl")
        ips = [r["images_per_s"] for r in logs if r.get("split") == "train"]
        held = [r for r in logs if r.get("split") == "heldout"]
        # sampling speed: 1,000 images from the selected checkpoint
        r = load_image_run(f"bench-{kind}")
        g = torch.Generator().manual_seed(0)
        y = torch.arange(1000) % 10 if r.n_classes else None
        ts = time.perf_counter()
        with torch.no_grad():
            for i in range(0, 1000, 250):
                to_uint8(r.model.sample(250, y[i:i + 250] if y is not None else None, generator=g))
        sample_ips = 1000 / (time.perf_counter() - ts)
        results[kind] = {**{k: m.get(k) for k in ("fid", "kid", "precision", "recall", "cond_acc", "nn_dist_mean",
                                                   "nelbo", "bpd", "best_step", "step")},
                         "fid_ratio": m["fid"] / floor["fid"], "train_images_per_s": ips[-1] if ips else None,
                         "sample_images_per_s": sample_ips, "wall_s": wall,
                         "fid_curve": [(h["step"], round(h["fid"] / floor["fid"], 2)) for h in held]}
        print(f"[{kind}] {json.dumps(results[kind])}", flush=True)

    print()
    print(f"sklearn:digits 16x16, {args.minutes:g} min/model, preset {args.preset}, seed {args.seed} "
          "(FID-proxy: gencraft's own feature net; ratio = model / real-data floor)")
    hdr = f"{'model':<10}{'FID-proxy':>10}{'floor':>8}{'ratio':>7}{'KID':>9}{'kid floor':>10}{'prec':>6}{'recall':>7}" \
          f"{'cond acc':>9}{'nn dist':>8}{'train img/s':>12}{'sample img/s':>13}{'nelbo nats':>11}{'bits/dim':>9}"
    print(hdr)
    print(f"{'floor':<10}{floor['fid']:>10.2f}{floor['fid']:>8.2f}{1.0:>7.2f}{floor['kid']:>9.3f}{floor['kid']:>10.3f}"
          f"{floor['precision']:>6.2f}{floor['recall']:>7.2f}{floor.get('cond_acc', float('nan')):>9.3f}"
          f"{floor['nn_dist_mean']:>8.3f}")
    for kind, r in results.items():
        print(f"{kind:<10}{r['fid']:>10.2f}{floor['fid']:>8.2f}{r['fid_ratio']:>7.2f}{r['kid']:>9.3f}{floor['kid']:>10.3f}"
              f"{r['precision']:>6.2f}{r['recall']:>7.2f}{(r['cond_acc'] or float('nan')):>9.3f}{r['nn_dist_mean']:>8.3f}"
              f"{(r['train_images_per_s'] or 0):>12.0f}{r['sample_images_per_s']:>13.0f}"
              f"{(r['nelbo'] if r['nelbo'] is not None else float('nan')):>11.1f}"
              f"{(r['bpd'] if r['bpd'] is not None else float('nan')):>9.3f}")
    print(f"{'calib.':<10}{'11.3':>10}{'12.1':>8}{CALIBRATION['fid_ratio']:>7.2f}{'':>9}{'':>10}{'':>6}{'':>7}"
          f"{CALIBRATION['cond_acc']:>9.2f}   (throwaway cond. DCGAN, SN + hinge, {CALIBRATION['minutes']} min, 2 cores)")
    print("targets: best GAN ratio <= 1.0, other <= 1.5, cond acc >= 0.98, recall >= 0.5 for every model")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"floor": floor, "results": results, "minutes": args.minutes, "preset": args.preset}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

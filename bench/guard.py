"""Guard benchmarks: copy index build/check speed, text watermark detection and cost, image watermark robustness.

    .venv/bin/python bench/guard.py                     # full: 100 MB synthetic corpus
    .venv/bin/python bench/guard.py --synthetic-mb 20   # lighter; scale the build time linearly

Everything is generated or read locally (tinyshakespeare from shared/data, sklearn's sample images);
scratch files go to /tmp/gencraft-bench-guard. Prints measured figures beside the reference figures.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path(os.environ.get("GENCRAFT_SHARED_DATA", "/work/shared/data"))
SCRATCH = Path("/tmp/gencraft-bench-guard")
ROWS: list[tuple[str, str, str]] = []


def row(what: str, measured: str, reference: str) -> None:
    ROWS.append((what, measured, reference))
    print(f"  {what:<58} {measured:<28} {reference}", flush=True)


def timed(fn, repeat: int = 1):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


# --- copy index ----------------------------------------------------------------------------------


def bench_copy_shakespeare() -> None:
    from gencraft.data import load_dataset, prepare
    from gencraft.guard.copies import CopyIndex, build_dataset_index

    print("copy index: tinyshakespeare (char tokenizer)", flush=True)
    ds_dir = SCRATCH / "ds-shakespeare"
    if not (ds_dir / "manifest.json").exists():
        prepare([SHARED / "tinyshakespeare.txt"], ds_dir, license="public-domain", unit="paragraph")
    ds = load_dataset(ds_dir)
    docs = list(ds.documents("train"))
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    _, t = timed(lambda: build_dataset_index(ds_dir, SCRATCH / "idx-shakespeare"), repeat=3)
    row(f"index build, {mb:.2f} MB train text (char + token level)", f"{mb / t:.1f} MB/s ({t:.2f} s)", "-")
    idx = CopyIndex(SCRATCH / "idx-shakespeare", ds.tokenizer)
    planted = max(docs, key=lambda d: len(d["text"]))["text"][:300]
    rng = np.random.default_rng(0)
    words = ["zebra", "quantum", "violin", "harbor", "lantern", "meadow", "copper", "orbit", "velvet", "thistle"]
    filler = " ".join(rng.choice(words, size=200))
    text = (filler[:350] + " " + planted + " " + filler)[:1000]
    n_tok = len(ds.tokenizer.encode(text))
    report, t = timed(lambda: idx.check(text), repeat=5)
    row(f"check latency, {n_tok}-token output (300-char planted copy)", f"{t * 1000:.1f} ms",
        "-")
    row("  found: longest span chars / tokens", f"{report.longest_chars} / {report.longest_tokens}", "300-char copy")


class WordTokenizer:
    """Word-level ids for the synthetic corpus (its words are the vocabulary; a space follows each)."""

    def __init__(self, words: list[str]) -> None:
        self.index = {w: i + 1 for i, w in enumerate(words)}
        self.words = ["<eos>"] + words
        self.eos_id = 0

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, -1) for w in text.split(" ") if w]

    def decode(self, ids) -> str:
        return " ".join(self.words[i] for i in ids)


def bench_copy_synthetic(mb_target: int) -> None:
    from gencraft.guard.copies import CopyIndex, build_copy_index

    print(f"copy index: {mb_target} MB synthetic corpus (Zipfian pseudo-words)", flush=True)
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = sorted({"".join(rng.choice(letters, size=rng.integers(2, 10))) for _ in range(20000)})
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    avg = float((np.array([len(w) + 1 for w in vocab]) * p).sum())
    n_words = int(mb_target * 1e6 / avg)
    t0 = time.perf_counter()
    ids = rng.choice(len(vocab), size=n_words, p=p)
    doc_words = 400
    vocab_arr = np.array(vocab, dtype=object)
    docs, tokens = [], []
    for d, s in enumerate(range(0, n_words, doc_words)):
        chunk = ids[s:s + doc_words]
        docs.append({"id": d, "source": 0, "text": " ".join(vocab_arr[chunk])})
        tokens.append(chunk + 1)
        tokens.append(np.zeros(1, dtype=chunk.dtype))
    token_arr = np.concatenate(tokens).astype(np.uint16 if len(vocab) < 65535 else np.uint32)
    mb = sum(len(d["text"]) for d in docs) / 1e6
    print(f"  (generated {mb:.1f} MB in {time.perf_counter() - t0:.1f} s)", flush=True)
    src = [{"path": "synthetic", "sha256": "-", "license": "CC0-1.0"}]
    _, t_char = timed(lambda: build_copy_index(SCRATCH / "idx-syn", docs, src))
    row(f"index build, {mb:.0f} MB synthetic (char level)", f"{mb / t_char:.1f} MB/s ({t_char:.1f} s)", "-")
    _, t_both = timed(lambda: build_copy_index(SCRATCH / "idx-syn", docs, src, tokens=token_arr, eos_id=0))
    row(f"index build, {mb:.0f} MB synthetic (char + word-token level)", f"{mb / t_both:.1f} MB/s ({t_both:.1f} s)",
        "-")
    size = sum(f.stat().st_size for f in (SCRATCH / "idx-syn").iterdir()) / 1e6
    row("  index size on disk", f"{size:.0f} MB ({size / mb:.1f}x corpus)", "-")
    tok = WordTokenizer(vocab)
    idx = CopyIndex(SCRATCH / "idx-syn", tok)
    planted = docs[len(docs) // 2]["text"][:400]
    filler = " ".join(vocab_arr[rng.choice(len(vocab), size=600, p=p)])
    text = " ".join((filler[:2000] + " " + planted + " " + filler[2000:]).split(" ")[:1000])
    report, t = timed(lambda: idx.check(text), repeat=5)
    row("check latency, 1000-token output (planted copy)", f"{t * 1000:.1f} ms", "-")
    row("  found: longest span chars / tokens", f"{report.longest_chars} / {report.longest_tokens}",
        f"{len(planted)} chars")
    import shutil

    shutil.rmtree(SCRATCH / "idx-syn", ignore_errors=True)


# --- text watermark ------------------------------------------------------------------------------


def train_run(iters: int) -> Path:
    from gencraft.data import prepare
    from gencraft.train.loop import train

    run = SCRATCH / f"run-char-{iters}"
    if (run / "gencraft.json").exists():
        return run
    ds_dir = SCRATCH / "ds-shakespeare"
    if not (ds_dir / "manifest.json").exists():
        prepare([SHARED / "tinyshakespeare.txt"], ds_dir, license="public-domain", unit="paragraph")
    t = time.perf_counter()
    train(ds_dir, out=run, seed=0, progress=False,
          overrides=[f"max_iters={iters}", "n_layer=2", "n_embd=64", "n_head=4", "block_size=64",
                     f"eval_interval={iters}", "eval_iters=10", "batch_size=16"])
    print(f"  (trained {run.name} in {time.perf_counter() - t:.0f} s)", flush=True)
    return run


def val_loss_with_watermark(tm, ids: np.ndarray, proc, block: int = 64, batches: int = 40) -> tuple[float, float]:
    """Mean next-token loss on validation ids without and with the watermark bias applied."""
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(ids) - block - 1, size=batches * 8)
    plain, marked = [], []
    rule = proc.rule
    with torch.inference_mode():
        for b in range(batches):
            s = starts[b * 8:(b + 1) * 8]
            x = torch.from_numpy(np.stack([ids[i:i + block] for i in s]).astype(np.int64))
            y = torch.from_numpy(np.stack([ids[i + 1:i + block + 1] for i in s]).astype(np.int64))
            logits, _ = tm.model(x)
            logits = logits.float()
            plain.append(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item())
            contexts = [(int(t),) for t in x.reshape(-1)]
            mask = torch.from_numpy(rule.green_mask(contexts)[:, :logits.shape[-1]]).float()
            biased = logits.reshape(-1, logits.shape[-1]) + rule.delta * mask
            marked.append(torch.nn.functional.cross_entropy(biased, y.reshape(-1)).item())
    return float(np.mean(plain)), float(np.mean(marked))


def bench_text_watermark(iters: int, n_gen: int) -> None:
    from gencraft import guard
    from gencraft.backends import load
    from gencraft.data import load_dataset
    from gencraft.guard.watermark import WatermarkProcessor, detect_ids, detect_text

    print(f"text watermark: char GPT (2L/64, {iters} iters on tinyshakespeare), gamma=0.25 delta=2.0", flush=True)
    run = train_run(iters)
    tm = load(run)
    key = b"bench-key".ljust(32, b"!")
    proc = WatermarkProcessor(key, tm.tokenizer.vocab_size)
    ds = load_dataset(SCRATCH / "ds-shakespeare")
    val = [d["text"] for d in ds.documents("val")]
    prompts = [v[:16] for v in val if len(v) > 16][:n_gen]
    t = time.perf_counter()
    marked = tm.generate(prompts, max_new_tokens=200, seed=0, processors=[proc], stop_at_eos=False)
    plain = tm.generate(prompts, max_new_tokens=200, seed=0, stop_at_eos=False)
    print(f"  (generated 2 x {len(prompts)} x 200 tokens in {time.perf_counter() - t:.0f} s)", flush=True)
    z_ids = [detect_ids(list(r.token_ids), proc.rule).z for r in marked]
    z_text = [detect_text(r.text, tm.tokenizer, proc.rule).z for r in marked]
    z_plain = [detect_text(r.text, tm.tokenizer, proc.rule).z for r in plain]
    human_ids = np.asarray(ds.val_ids())
    chunks = [list(map(int, human_ids[i:i + 200])) for i in range(0, len(human_ids) - 200, 200)]
    z_human = [detect_ids(c, proc.rule).z for c in chunks]
    rate = lambda zs: sum(z > 4 for z in zs) / len(zs)  # noqa: E731
    row(f"detection rate z>4, {len(prompts)} x 200-token generations (ids)", f"{rate(z_ids):.2f} "
        f"(median z {statistics.median(z_ids):.1f})", "KGW'23 (OPT-1.3B, T=200): near 1")
    row("  same, re-tokenized from the text", f"{rate(z_text):.2f} (median z {statistics.median(z_text):.1f})", "-")
    row(f"false positives z>4: {len(z_plain)} unwatermarked generations", f"{rate(z_plain):.3f} "
        f"(max z {max(z_plain):.1f})", "expected 3e-5 (N(0,1) tail)")
    row(f"false positives z>4: {len(z_human)} x 200-token held-out human text", f"{rate(z_human):.3f} "
        f"(max z {max(z_human):.1f})", "expected 3e-5 (N(0,1) tail)")
    loss, loss_wm = val_loss_with_watermark(tm, human_ids, proc)
    row("validation loss / ppl without -> with watermark bias",
        f"{loss:.3f} -> {loss_wm:.3f} (ppl {math.exp(loss):.2f} -> {math.exp(loss_wm):.2f})",
        "KGW'23: cost grows with delta")
    from gencraft.guard.memorization import extractability

    t = time.perf_counter()
    mem = extractability(run, prompts=100, prefix_tokens=50, suffix_tokens=50, model=tm)
    row("memorization: 100 train prefixes of 50 tokens, greedy 50 verbatim",
        f"{mem.extractable_fraction:.2f} (mean {mem.mean_matched_prefix:.1f} tokens match; "
        f"{time.perf_counter() - t:.0f} s)", "Carlini'23: grows with model size and repeats")
    step = WatermarkProcessor(key, 50257)
    batches = iter([torch.randint(0, 50257, (8, 64)) for _ in range(20)])
    logits = torch.randn(8, 50257)
    _, t = timed(lambda: step(next(batches), logits), repeat=20)
    row("processor cost per step, B=8, V=50257, new contexts", f"{t * 1000:.2f} ms", "-")
    _ = guard  # the public API is what the CLI uses; bench calls the parts directly


# --- image watermark -----------------------------------------------------------------------------


def bench_image_watermark() -> None:
    from PIL import Image
    from sklearn.datasets import load_digits, load_sample_image

    from gencraft.guard.watermark import detect_image, embed_image

    print("image watermark: DCT mid-band spread spectrum, 32 bits (>= 28 of 32 to detect)", flush=True)
    key = b"bench-image-key".ljust(32, b"!")
    digits = load_digits().images[:16].reshape(4, 4, 8, 8).transpose(0, 2, 1, 3).reshape(32, 32) / 16.0
    base = np.kron(digits, np.ones((8, 8)))
    sprite = np.stack([base * 200 + 30, base * 120 + 60, 220 - base * 150], -1)
    images = {"china.jpg 640x427": Image.fromarray(load_sample_image("china.jpg")),
              "flower.jpg 640x427": Image.fromarray(load_sample_image("flower.jpg")),
              "digits sprite 256x256": Image.fromarray(np.clip(sprite, 0, 255).astype(np.uint8)),
              "digits sprite 64x64 (small band)": Image.fromarray(np.clip(sprite, 0, 255).astype(np.uint8))
              .resize((64, 64), Image.BOX)}

    def jpeg(im: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="JPEG", quality=75)
        buf.seek(0)
        return Image.open(buf)

    for name, img in images.items():
        marked = embed_image(img, key)
        a, b = np.asarray(img.convert("RGB"), float), np.asarray(marked, float)
        psnr = 10 * np.log10(255**2 / ((a - b) ** 2).mean())
        half = marked.resize((marked.width // 2, marked.height // 2), Image.BICUBIC)
        accs = [detect_image(x, key).bit_accuracy for x in (marked, jpeg(marked), half, jpeg(half))]
        unmarked = detect_image(jpeg(img), key)
        row(f"{name}: PSNR / bits clean, JPEG75, 0.5x, 0.5x+JPEG75",
            f"{psnr:.1f} dB / " + " ".join(f"{x:.2f}" for x in accs), "survive JPEG75 and 0.5x")
        row("  unmarked image: bit accuracy, detected?", f"{unmarked.bit_accuracy:.2f}, {unmarked.detected}",
            "~0.5, False")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic-mb", type=int, default=100)
    ap.add_argument("--train-iters", type=int, default=600)
    ap.add_argument("--generations", type=int, default=40)
    ap.add_argument("--skip", nargs="*", default=[], choices=["copies", "synthetic", "text", "image"])
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    SCRATCH.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GENCRAFT_HOME", str(SCRATCH / "home"))
    print(f"{'what':<60} {'measured':<28} reference")
    if "copies" not in args.skip:
        bench_copy_shakespeare()
    if "synthetic" not in args.skip:
        bench_copy_synthetic(args.synthetic_mb)
    if "text" not in args.skip:
        bench_text_watermark(args.train_iters, args.generations)
    if "image" not in args.skip:
        bench_image_watermark()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Guard benchmarks: copy index speed and copies under reformatting; text watermarks (tournament and green
list: detection, false positives, perplexity cost, robustness, on a char and a BPE model); image watermark;
the keyed draw of game maps; the audio watermark on the music kit's synthesized audio.

    .venv/bin/python bench/guard.py                     # full: 100 MB synthetic corpus
    .venv/bin/python bench/guard.py --synthetic-mb 20   # lighter; scale the build time linearly

Everything is generated or read locally (tinyshakespeare from shared/data, sklearn's sample images);
scratch files go to /tmp/gencraft-bench-guard. Prints measured figures beside the reference figures.
"""

from __future__ import annotations

import argparse
import functools
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


# --- reformatted copies --------------------------------------------------------------------------


def _full_width(text: str) -> str:
    return text.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)}).replace(" ", "\u3000")


def _repunctuate(text: str, rng: np.random.Generator) -> str:
    swap = {",": [";", " -", ""], ".": ["!", ";", ""], ";": [",", "."], ":": [",", " -"], "!": [".", "?"],
            "?": ["!", "."], "'": ["’", ""], "，": ["、", ",", " "], "。": ["！", ".", "；"]}
    return "".join(rng.choice(swap[c]) if c in swap else c for c in text)


def bench_copy_reformatting(passages: int) -> None:
    """Planted copies of the training text under reformatting, English and Chinese, and false positives
    on held-out text (the train/val split the model would use)."""
    import json

    import zhconv

    from gencraft.guard.copies import CopyIndex, build_copy_index

    print("copy check under reformatting: planted training passages vs held-out text", flush=True)
    rng = np.random.default_rng(0)
    paras = [p for p in (SHARED / "tinyshakespeare.txt").read_text(encoding="utf-8").split("\n\n") if p.strip()]
    order = rng.permutation(len(paras))
    held = {int(i) for i in order[:len(paras) // 10]}
    train = [p for i, p in enumerate(paras) if i not in held]
    val = "\n\n".join(p for i, p in enumerate(paras) if i in held)
    build_copy_index(SCRATCH / "idx-en", [{"id": i, "source": 0, "text": t} for i, t in enumerate(train)],
                     [{"path": "tinyshakespeare.txt", "license": "public-domain"}])
    en = CopyIndex(SCRATCH / "idx-en")
    long_docs = [t for t in train if t.count("\n") >= 8]
    planted = []
    for i in range(passages):
        lines = long_docs[i % len(long_docs)].split("\n")
        start = int(rng.integers(0, max(1, len(lines) - 8)))
        planted.append("\n".join(lines[start:start + 8]))  # 8 lines, ~300 characters
    variants = {
        "verbatim": lambda t: t,
        "line breaks joined": lambda t: t.replace("\n", " "),
        "punctuation changed": lambda t: _repunctuate(t, rng),
        "full-width forms": _full_width,
        "joined + punctuation + upper case": lambda t: _repunctuate(t.replace("\n", " "), rng).upper(),
    }
    for name, f in variants.items():
        reports = [en.check(f(t)) for t in planted]
        frac = statistics.median(r.char_ngram_fraction for r in reports)
        row(f"EN {passages} planted 8-line passages, {name}: flagged",
            f"{sum(r.copy_risk for r in reports) / len(reports):.2f} (median n-gram share {frac:.2f})",
            "must be 1.00")
    chunks = [val[i:i + 300] for i in range(0, len(val) - 300, 300)]
    fp = [en.check(c) for c in chunks]
    row(f"EN held-out: {len(chunks)} x 300-char val chunks flagged",
        f"{sum(r.copy_risk for r in fp) / len(fp):.3f} (max share {max(r.char_ngram_fraction for r in fp):.2f}, "
        f"longest {max(r.longest_chars for r in fp)} chars)", "near 0")
    lines = [ln for p in train for ln in p.split("\n")]
    issue = " ".join(lines[1000:1031])  # the issue's case: 31 training lines with their breaks joined
    r = en.check(issue)
    row("EN the issue's case: 31 training lines, breaks joined", f"{'copy-risk' if r.copy_risk else 'ok'}: "
        f"longest {r.longest_chars} chars, share {r.char_ngram_fraction:.2f}", "was ok (longest 49, 51%)")

    from gencraft.guard.copies import fold

    poems = list({fold("".join(p["paragraphs"])): p for p in
                  json.loads((SHARED / "tang300.json").read_text(encoding="utf-8"))}.values())  # 12 exact repeats
    order = rng.permutation(len(poems))
    held_p = [poems[i] for i in order[:len(poems) // 10]]
    train_p = [poems[i] for i in order[len(poems) // 10:]]
    build_copy_index(SCRATCH / "idx-zh", [{"id": i, "source": 0, "text": "\n".join(p["paragraphs"])}
                                          for i, p in enumerate(train_p)],
                     [{"path": "tang300.json", "license": "public-domain"}])
    zh = CopyIndex(SCRATCH / "idx-zh")
    texts = ["\n".join(p["paragraphs"]) for p in train_p[:passages]]  # traditional, as in the anthology
    zh_variants = {
        "verbatim (traditional)": lambda t: t,
        "simplified": lambda t: zhconv.convert(t, "zh-hans"),
        "simplified, lines joined, half-width punctuation": lambda t: zhconv.convert(t, "zh-hans").replace(
            "\n", "").replace("，", ",").replace("。", ". "),
        "punctuation changed, full-width digits and spaces": lambda t: _repunctuate(t, rng).replace("\n", "\u3000"),
    }
    for name, f in zh_variants.items():
        reports = [zh.check(f(t)) for t in texts]
        row(f"ZH {len(texts)} planted whole poems, {name}: flagged",
            f"{sum(r.copy_risk for r in reports) / len(reports):.2f}", "must be 1.00")
    fp = [zh.check(zhconv.convert("\n".join(p["paragraphs"]), "zh-hans")) for p in held_p]
    row(f"ZH held-out: {len(fp)} poems (simplified) flagged",
        f"{sum(r.copy_risk for r in fp) / len(fp):.3f} (max share {max(r.char_ngram_fraction for r in fp):.2f})",
        "near 0 (variant copies of one poem are copies)")


# --- text watermarks ------------------------------------------------------------------------------


def train_run(iters: int, tokenizer: str = "char") -> Path:
    """A 2-layer GPT on tinyshakespeare: char tokens, or a 2,000-token byte-level BPE."""
    from gencraft.data import prepare
    from gencraft.train.loop import train

    run = SCRATCH / f"run-{tokenizer}-{iters}"
    if (run / "gencraft.json").exists():
        return run
    ds_dir = SCRATCH / f"ds-shakespeare-{tokenizer}"
    if not (ds_dir / "manifest.json").exists():
        prepare([SHARED / "tinyshakespeare.txt"], ds_dir, license="public-domain", unit="paragraph",
                tokenizer=tokenizer, vocab_size=2000 if tokenizer == "bpe" else None)
    width = 64 if tokenizer == "char" else 128
    t = time.perf_counter()
    train(ds_dir, out=run, seed=0, progress=False,
          overrides=[f"max_iters={iters}", "n_layer=2", f"n_embd={width}", "n_head=4", "block_size=64",
                     f"eval_interval={iters}", "eval_iters=10", "batch_size=16"])
    print(f"  (trained {run.name} in {time.perf_counter() - t:.0f} s)", flush=True)
    return run


@torch.inference_mode()
def nll_per_token(tm, ids: list[int], start: int) -> list[float]:
    """Each token's negative log-likelihood under ``tm`` from position ``start`` on (windows of the
    model's context; every token sees at least half a window)."""
    block = tm.model.max_context
    out: list[float] = []
    pos = start
    while pos < len(ids):
        lo = max(0, pos - block // 2)
        hi = min(len(ids), lo + block)
        x = torch.tensor([ids[lo:hi]])
        logits, _ = tm.model(x)
        lp = torch.log_softmax(logits[0].float(), -1)
        for t in range(pos, hi):
            out.append(-float(lp[t - lo - 1, ids[t]]))
        pos = hi
    return out


def _edit(ids: list[int], share: float, vocab: int, rng: np.random.Generator) -> list[int]:
    return [int(rng.integers(vocab)) if rng.random() < share else t for t in ids]


def _p_value(schemes: dict, scheme: str, ids: list[int]) -> float:
    from gencraft.guard.tournament import detect as detect_tournament
    from gencraft.guard.watermark import detect_ids

    rule = schemes[scheme].rule
    return detect_tournament(ids, rule).p_value if scheme == "tournament" else detect_ids(ids, rule).p_value


def bench_text_watermarks(iters: int, n_gen: int) -> None:
    from gencraft.data import load_dataset
    from gencraft.guard import watermark_options
    from gencraft.guard.memorization import extractability
    from gencraft.guard.tournament import TournamentWatermark
    from gencraft.guard.watermark import WatermarkProcessor

    key = b"bench-key".ljust(32, b"!")
    for tokenizer in ("char", "bpe"):
        from gencraft.backends import load

        run = train_run(iters, tokenizer)
        tm = load(run)
        ds = load_dataset(SCRATCH / f"ds-shakespeare-{tokenizer}")
        V = tm.tokenizer.vocab_size
        val = [d["text"] for d in ds.documents("val") if len(d["text"]) > 24]
        prompts = [tm.tokenizer.encode(v[:24])[:8] for v in val[:n_gen]]
        human = np.asarray(ds.val_ids())
        chunks = [list(map(int, human[i:i + 200])) for i in range(0, len(human) - 200, 200)][:400]
        schemes = {"tournament": TournamentWatermark(key, V), "green-list": WatermarkProcessor(key, V)}
        score = functools.partial(_p_value, schemes)

        print(f"text watermarks: {tokenizer} GPT ({run.name}, val loss "
              f"{tm.info['metrics']['best_val_loss']:.3f}), {len(prompts)} x 200 tokens at temperature 1", flush=True)
        t = time.perf_counter()
        plain = tm.generate(prompts, max_new_tokens=200, seed=0, stop_at_eos=False)
        plain_nll = [statistics.mean(nll_per_token(tm, p + r.token_ids, len(p))) for p, r in zip(prompts, plain,
                                                                                                  strict=True)]
        entropy = statistics.mean(plain_nll)
        row("  mean NLL of unwatermarked samples (~ entropy per token)", f"{entropy:.3f} nats "
            f"(ppl {math.exp(entropy):.2f})", "-")
        rng = np.random.default_rng(0)
        for scheme, wm in schemes.items():
            marked = tm.generate(prompts, max_new_tokens=200, seed=0, stop_at_eos=False,
                                 **watermark_options(wm))
            ids = [list(r.token_ids) for r in marked]
            rate = lambda ps: sum(p <= 1e-4 for p in ps) / len(ps)  # noqa: E731
            ps = [score(scheme, i) for i in ids]
            ps_text = [score(scheme, list(tm.tokenizer.encode(r.text))) for r in marked]
            ps_edit = [score(scheme, _edit(i, 0.10, V, rng)) for i in ids]
            fp_human = [score(scheme, c) for c in chunks]
            fp_plain = [score(scheme, list(r.token_ids)) for r in plain]
            nll = [statistics.mean(nll_per_token(tm, p + i, len(p))) for p, i in zip(prompts, ids, strict=True)]
            cost = math.exp(statistics.mean(nll) - entropy) - 1
            diff = [a - b for a, b in zip(nll, plain_nll, strict=True)]  # same prompts: a paired difference
            se = statistics.stdev(diff) / math.sqrt(len(diff))
            row(f"  {scheme}: detected at p <= 1e-4, 200 tokens (ids / re-tokenized text)",
                f"{rate(ps):.2f} / {rate(ps_text):.2f} (median p {statistics.median(ps):.1e})", "aim >= 0.95")
            row(f"  {scheme}: 10% of the tokens replaced at random", f"{rate(ps_edit):.2f}", "-")
            row(f"  {scheme}: false positives, {len(chunks)} human chunks / {len(plain)} plain samples",
                f"{rate(fp_human):.3f} / {rate(fp_plain):.3f}", "1e-4 by construction")
            row(f"  {scheme}: perplexity of its samples under the model vs unwatermarked",
                f"{math.exp(statistics.mean(nll)):.2f} vs {math.exp(entropy):.2f} ({cost:+.1%} "
                f"+- {2 * se:.1%})", "aim <= +1%")
        # temperature lowers the entropy every scheme feeds on
        wm = schemes["tournament"]
        for temp in (0.7, 0.4, 0.2, 0.1):
            marked = tm.generate(prompts, max_new_tokens=200, seed=0, stop_at_eos=False, temperature=temp,
                                 **watermark_options(wm))
            ps = [score("tournament", list(r.token_ids)) for r in marked]
            ent = statistics.mean(statistics.mean(nll_per_token(tm, p + list(r.token_ids), len(p)))
                                  for p, r in zip(prompts[:10], marked[:10], strict=True))
            row(f"  tournament at temperature {temp}: detected (samples' NLL at T=1 {ent:.2f} nats/token)",
                f"{sum(p <= 1e-4 for p in ps) / len(ps):.2f} (median p {statistics.median(ps):.1e})", "-")
        many = tm.generate(prompts[0], max_new_tokens=200, seed=0, n=8, stop_at_eos=False,
                           **watermark_options(wm))
        row("  tournament: 8 samples of one prompt: distinct / detected",
            f"{len({tuple(r.token_ids) for r in many})} / {sum(score('tournament', list(r.token_ids)) <= 1e-4 for r in many)}",
            "8 / 8")
        if tokenizer == "char":
            mem = extractability(run, prompts=100, prefix_tokens=50, suffix_tokens=50, model=tm)
            row("  memorization: 100 train prefixes of 50 tokens, greedy 50 verbatim",
                f"{mem.extractable_fraction:.2f} (mean {mem.mean_matched_prefix:.1f} tokens match)",
                "Carlini'23: grows with model size and repeats")
        print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)


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


def bench_map_watermark(keys: int) -> None:
    """Game maps: the grid tournament (a keyed draw per tile) on the packaged example maps (24x16)."""
    from importlib import resources

    from gencraft.apps import maps
    from gencraft.guard.tournament import GridWatermark, detect_grid

    print(f"map watermark: grid tournament, 16 layers, {keys} random keys, maps of the packaged examples (24x16)",
          flush=True)
    examples = maps.load_maps([Path(str(resources.files("gencraft") / "assets" / "maps"))])
    rng = np.random.default_rng(0)
    one, four, edited, null = [], [], [], []
    for _ in range(keys):
        wm = GridWatermark(rng.bytes(32))
        grids = [maps.generate_map(examples, seed=1000 * i, watermark=wm).grid for i in range(4)]
        one.append(detect_grid(grids[:1], wm.rule).p_value)
        four.append(detect_grid(grids, wm.rule).p_value)
        g = [row[:] for row in grids[0]]
        h, w = len(g), len(g[0])
        tiles = sorted({t for row in g for t in row} - {"S", "G"})
        cells = [(y, x) for y in range(1, h - 1) for x in range(1, w - 1) if g[y][x] not in "SG"]
        for k in rng.choice(len(cells), size=len(cells) // 10, replace=False):  # 10% of the tiles changed
            y, x = cells[k]
            g[y][x] = tiles[int(rng.integers(len(tiles)))]
        edited.append(detect_grid([g], wm.rule).p_value)
        null.append(detect_grid([maps.generate_map(examples, seed=int(rng.integers(1 << 30))).grid], wm.rule).p_value)

    def share(ps: list[float], alpha: float = 1e-4) -> str:
        return f"{np.mean(np.array(ps) <= alpha):.0%} (median p {np.median(ps):.1g})"

    row("one map: detected at p <= 1e-4", share(one), "as a 200-token text: >= 95%")
    row("  at p <= 1e-3", share(one, 1e-3), "")
    row("four maps in one file (game map -n 4): at p <= 1e-4", share(four), ">= 95%")
    row("one map, 10% of its tiles changed: at p <= 1e-4", share(edited), "")
    row("unmarked maps scored with the key: p <= 1e-4 / 1e-3", f"{np.mean(np.array(null) <= 1e-4):.0%} / "
        f"{np.mean(np.array(null) <= 1e-3):.0%}", "~0.01% / ~0.1%")


def bench_music_audio_watermark(pieces: int) -> None:
    """The audio watermark on the music kit's synthesized audio: Bach chorales (music21's corpus) rendered by
    gencraft.music.synth, released as the compose command releases its WAV."""
    from music21 import corpus

    from gencraft import audio
    from gencraft.guard import ReleasePolicy, release
    from gencraft.guard.audio import detect_audio, embed_audio, wav_samples
    from gencraft.guard.keys import init_keys, load_keys
    from gencraft.guard.watermark import derive_key
    from gencraft.music.midi import read_score
    from gencraft.music.synth import render

    print(f"audio watermark on synthesized music: {pieces} Bach chorales rendered to pure tones", flush=True)
    keys = load_keys() or init_keys()  # the scratch home's keys
    key = derive_key(keys.watermark_secret, "audio")
    rng = np.random.default_rng(0)

    def pcm(data: bytes) -> np.ndarray:
        return wav_samples(data)[0].astype(np.float32) / 32768.0

    plain, claimed, attacked, clean, snr, snr_plain = [], 0, [], [], [], []
    with ReleasePolicy(keys=keys, store=False, copy_check=False) as policy:
        for path in corpus.getComposer("bach")[:pieces]:
            x = render(read_score(path)[0], 90.0, audio.SAMPLE_RATE)
            data = audio.wav_bytes(x, audio.SAMPLE_RATE)
            x16 = pcm(data)
            marked = pcm(audio.wav_bytes(embed_audio(x16, key)))
            plain.append(detect_audio(marked, key).score)
            snr_plain.append(10 * np.log10((x16 ** 2).sum() / ((marked - x16) ** 2).sum()))
            rel = release(data, kind="audio", label="music", policy=policy)
            clean.append(detect_audio(x16, key).p_value)
            if rel.manifest["watermark"] is None:
                continue
            claimed += 1
            y = pcm(rel.data)
            snr.append(10 * np.log10((x16 ** 2).sum() / ((y - x16) ** 2).sum()))
            a = audio.resample(y, audio.SAMPLE_RATE, 16000) * 10 ** (-6 / 20)
            noise = rng.normal(size=len(a)).astype(np.float32)
            noise *= np.sqrt(np.mean(a ** 2) / np.mean(noise ** 2) / 10 ** 3)
            attacked.append(detect_audio(a + noise, key, 16000).p_value)
    row("plain spectral mark on pure tones: median z", f"{np.median(plain):.1f}", "p <= 1e-4 needs z >= 3.7")
    row("released with a mark claimed (p <= 1e-4 as written)", f"{claimed}/{pieces}",
        "a mark is claimed only where it reads")
    if claimed:
        row("  claimed: detected after 16 kHz, -6 dB, 30 dB SNR noise", f"{np.mean(np.array(attacked) <= 1e-3):.0%} "
            f"at p <= 1e-3", "speech: 100% (bench/speech.py)")
        row("  signal / mark ratio", f"{np.median(snr):.1f} dB median",
            f"the mark alone: {np.median(snr_plain):.1f} dB")
    row("unmarked renders: detected at p <= 1e-3", f"{np.mean(np.array(clean) <= 1e-3):.0%}", "~0.1%")

    # what an untrained model composes: random pitches, sparse notes (the release test's music run)
    from gencraft.apps.music import generate_events
    from gencraft.models.gpt import GPT, GPTConfig
    from gencraft.music.events import decode
    from gencraft.music.tokenizer import MusicTokenizer

    tok = MusicTokenizer.build()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=512, n_layer=1, n_head=2, n_embd=32)).eval()
    marked = 0
    with ReleasePolicy(keys=keys, store=False, copy_check=False) as policy:
        for seed in range(pieces):
            ids = generate_events(model, tok, 8, seed)
            piece = decode("TS_4/4 " + tok.decode([i for i in ids if i != tok.eos_id]))
            rel = release(audio.wav_bytes(render(piece, 90.0, audio.SAMPLE_RATE)), kind="audio", label="music",
                          policy=policy)
            marked += rel.manifest["watermark"] is not None
    row("random-weight music GPT, 8 bars: mark claimed", f"{marked}/{pieces}", "the rest: manifest null")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic-mb", type=int, default=100)
    ap.add_argument("--train-iters", type=int, default=600)
    ap.add_argument("--generations", type=int, default=40)
    ap.add_argument("--passages", type=int, default=100, help="planted copies per reformatting variant")
    ap.add_argument("--map-keys", type=int, default=60, help="random keys for the map watermark")
    ap.add_argument("--chorales", type=int, default=20, help="rendered chorales for the music audio watermark")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["copies", "synthetic", "reformatting", "text", "image", "maps", "music"])
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    SCRATCH.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GENCRAFT_HOME", str(SCRATCH / "home"))
    print(f"{'what':<60} {'measured':<28} reference")
    if "copies" not in args.skip:
        bench_copy_shakespeare()
    if "synthetic" not in args.skip:
        bench_copy_synthetic(args.synthetic_mb)
    if "reformatting" not in args.skip:
        bench_copy_reformatting(args.passages)
    if "text" not in args.skip:
        bench_text_watermarks(args.train_iters, args.generations)
    if "image" not in args.skip:
        bench_image_watermark()
    if "maps" not in args.skip:
        bench_map_watermark(args.map_keys)
    if "music" not in args.skip:
        bench_music_audio_watermark(args.chorales)
    return 0


if __name__ == "__main__":
    sys.exit(main())

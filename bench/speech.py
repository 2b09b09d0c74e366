"""Voices: quality, speaker closeness, training budget, speed and the audio watermark, in one run.

    flock /tmp/gencraft-bench.lock python bench/speech.py --minutes 10 30       # the full benchmark
    python bench/speech.py --run RUN [RUN...] --work DIR                        # evaluate trained voices

What it does (all on this machine; nothing is downloaded):

1. Corpora: espeak-ng reads 600 sentences of the bundled sample corpus in voice A (low male, American)
   and the same sentences in voice B (high female, British), as LJSpeech folders; A becomes the dataset.
2. Training: ``gencraft train --model tts --preset small --max-time MINUTES*60`` for each budget
   (unless --run); 3. and 4. for each voice, 5. and 6. for the last.
3. Quality on A's held-out sentences, each beside the two floors (A's real mels through the trained
   vocoder, and through Griffin-Lim): mel-cepstral distortion after DTW (MCD, dB; 24 coefficients of the
   DCT of the log-mel, c0 excluded), F0 RMSE (Hz, voiced frames of both, along the DTW path), the
   duration ratio (generated / real) and STOI (pystoi) of the generated audio warped onto the real
   one's timeline along the DTW path.
4. Speaker closeness: the share of held-out sentences whose generated audio is closer (MCD) to A's
   recording than to B's recording of the same sentence (aim >= 95%).
5. Speed on 2 threads: real-time factor over a 4-sentence paragraph and time to first audio of a
   12-word sentence (warm), beside espeak-ng's own.
6. Watermark: detection on 100 generated clips after resampling to 16 kHz, a 6 dB gain change and
   white noise at 30 dB SNR; false positives on 100 clean clips (A's real recordings); the alternating
   mark beside the first scheme's (the same comb in every frame). ``--parts`` picks what to measure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gencraft import audio  # noqa: E402

N_CEP = 24


def mel_cepstrum(mel: np.ndarray) -> np.ndarray:
    """[80, T] natural-log mel magnitude -> [T, 24] mel-cepstra c1..c24, scaled like a real cepstrum
    (c_k = 1/M sum_m ln|S_m| cos(pi k (m + 1/2) / M)), so MCD's 10/ln10 * sqrt(2 sum d^2) is in dB."""
    from scipy.fft import dct

    return (dct(mel.T, type=2, axis=1) / (2 * mel.shape[0]))[:, 1:N_CEP + 1]


def dtw_path(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) of the minimum-cost monotonic path between frames of a [Ta, D] and b [Tb, D]."""
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    Ta, Tb = cost.shape
    D = np.full((Ta + 1, Tb + 1), np.inf)
    D[0, 0] = 0.0
    for i in range(1, Ta + 1):
        best_prev = np.minimum(D[i - 1, :-1], D[i - 1, 1:])  # diagonal or from above, for every j
        row = D[i]
        c = cost[i - 1]
        left = np.inf
        for j in range(1, Tb + 1):  # from the left depends on this row: a running minimum
            left = c[j - 1] + min(best_prev[j - 1], left)
            row[j] = left
    i, j, path = Ta, Tb, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        k = int(np.argmin([D[i - 1, j - 1], D[i - 1, j], D[i, j - 1]]))
        i, j = (i - 1, j - 1) if k == 0 else ((i - 1, j) if k == 1 else (i, j - 1))
    path.reverse()
    p = np.array(path)
    return p[:, 0], p[:, 1]


def mcd(c_ref: np.ndarray, c_gen: np.ndarray) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    i, j = dtw_path(c_ref, c_gen)
    diff = c_ref[i] - c_gen[j]
    return float(np.mean((10.0 / math.log(10.0)) * np.sqrt(2.0 * (diff ** 2).sum(1)))), (i, j)


def f0_track(x: np.ndarray, sr: int = audio.SAMPLE_RATE, fmin: float = 60.0, fmax: float = 400.0) -> np.ndarray:
    """F0 per hop-256 frame by normalized autocorrelation (0 = unvoiced); frames match the mel's."""
    win, hop = 1024, audio.HOP
    xp = np.pad(x, (win // 2, win // 2))
    n = 1 + (len(xp) - win) // hop
    lo, hi = int(sr / fmax), int(sr / fmin)
    out = np.zeros(n)
    for t in range(n):
        f = xp[t * hop:t * hop + win] * np.hanning(win)
        if np.sqrt(np.mean(f ** 2)) < 0.01:
            continue
        ac = np.fft.irfft(np.abs(np.fft.rfft(f, 2 * win)) ** 2)[:win]
        ac /= ac[0] + 1e-12
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5:
            out[t] = sr / lag
    return out


def warp(gen: np.ndarray, path: tuple[np.ndarray, np.ndarray], n_ref_frames: int) -> np.ndarray:
    """The generated audio on the reference's timeline: for each reference frame, the generated frame
    the DTW path maps it to, overlap-added with a Hann window at the reference's hop."""
    win, hop = 1024, audio.HOP
    g = np.pad(gen, (win // 2, win // 2))
    out = np.zeros((n_ref_frames - 1) * hop + win)
    norm = np.zeros_like(out)
    w = np.hanning(win)
    ref_to_gen = {}
    for i, j in zip(*path, strict=True):
        ref_to_gen.setdefault(int(i), int(j))
    for i in range(n_ref_frames):
        j = ref_to_gen.get(i, 0)
        seg = g[j * hop:j * hop + win]
        seg = np.pad(seg, (0, win - len(seg)))
        out[i * hop:i * hop + win] += seg * w
        norm[i * hop:i * hop + win] += w
    out = out / np.maximum(norm, 1e-3)
    return out[win // 2:win // 2 + (n_ref_frames - 1) * hop].astype(np.float32)


def quality(ref: np.ndarray, gen: np.ndarray) -> dict[str, float]:
    from pystoi import stoi

    m_ref, m_gen = audio.log_mel(ref).numpy(), audio.log_mel(gen).numpy()
    d, path = mcd(mel_cepstrum(m_ref), mel_cepstrum(m_gen))
    f_ref, f_gen = f0_track(ref), f0_track(gen)
    i, j = path
    i, j = i[i < len(f_ref)], j[: len(i[i < len(f_ref)])]
    j = np.minimum(j, len(f_gen) - 1)
    voiced = (f_ref[i] > 0) & (f_gen[j] > 0)
    f0 = float(np.sqrt(np.mean((f_ref[i][voiced] - f_gen[j][voiced]) ** 2))) if voiced.any() else float("nan")
    warped = warp(gen, path, m_ref.shape[1])
    n = min(len(ref), len(warped))
    s = float(stoi(ref[:n], warped[:n], audio.SAMPLE_RATE, extended=False))
    return {"mcd": d, "f0_rmse": f0, "dur_ratio": len(gen) / len(ref), "stoi": s}


def mean(rows: list[dict[str, float]], k: str) -> float:
    v = [r[k] for r in rows if not math.isnan(r[k])]
    return float(np.mean(v)) if v else float("nan")


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gencraft", *args], check=True)


def held_out_quality(ds, work: Path, voice, sp) -> None:
    """Quality and speaker closeness of ``voice`` on voice A's held-out sentences, beside the floors."""
    from gencraft.generate.speech import synthesize

    held = ds.split("val")
    rows: dict[str, list] = {"model": [], "vocoder floor": [], "griffin-lim floor": []}
    closer = 0
    for u in held:
        ref = ds.wav(u)
        other = audio.read_audio(work / "B" / "wavs" / (u["id"].replace("GCA", "GCB") + ".wav"))[0]
        other = audio.normalize_loudness(audio.trim_silence(other))
        gen = synthesize(u["text"], sp).audio
        rows["model"].append(quality(ref, gen))
        mel = audio.log_mel(ref)
        if voice.vocoder is not None:
            rows["vocoder floor"].append(quality(ref, voice.vocoder.synthesize(mel).numpy()))
        rows["griffin-lim floor"].append(quality(ref, audio.griffin_lim(mel)))
        d_other, _ = mcd(mel_cepstrum(audio.log_mel(other).numpy()), mel_cepstrum(audio.log_mel(gen).numpy()))
        closer += rows["model"][-1]["mcd"] < d_other
    print(f"quality on {len(held)} held-out sentences of voice A (means)")
    print(f"{'':20s} {'MCD dB':>8s} {'F0 RMSE Hz':>11s} {'dur ratio':>10s} {'STOI':>6s}")
    for name, rs in rows.items():
        if rs:
            print(f"{name:20s} {mean(rs, 'mcd'):8.2f} {mean(rs, 'f0_rmse'):11.1f} {mean(rs, 'dur_ratio'):10.3f} "
                  f"{mean(rs, 'stoi'):6.3f}")
    print(f"speaker closeness: {closer}/{len(held)} = {closer / len(held):.1%} of held-out sentences closer to "
          "voice A's recording than to voice B's (aim >= 95%)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/gencraft-speech-bench")
    ap.add_argument("--minutes", type=float, nargs="+", default=[10.0, 30.0],
                    help="training budgets of the small preset: one voice each, each one's quality measured (speed and the "
                    "watermark on the last)")
    ap.add_argument("--train-only", action="store_true", help="make the corpora and train the voices, then stop")
    ap.add_argument("--run", nargs="+", default=None, help="evaluate these trained voices instead of training")
    ap.add_argument("--n-sentences", type=int, default=600)
    ap.add_argument("--wm-clips", type=int, default=100)
    ap.add_argument("--parts", nargs="+", choices=["quality", "speed", "watermark"],
                    default=["quality", "speed", "watermark"], help="what to measure (default: all)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ["GENCRAFT_HOME"] = str(work / "home")
    torch.set_num_threads(2)
    from gencraft.data.speech import load_speech_dataset, prepare_speech
    from gencraft.generate.espeak import make_espeak_corpus
    from gencraft.generate.speech import Speaker, synthesize
    from gencraft.runs import load_voice

    for v in ("A", "B"):
        if not (work / v / "metadata.csv").is_file():
            make_espeak_corpus(work / v, v, args.n_sentences)
    ds_path = work / "ds-A"
    if not (ds_path / "manifest.json").is_file():
        prepare_speech(work / "A", out=ds_path, license="CC0-1.0", speaker="espeak voice A")
    ds = load_speech_dataset(ds_path)
    runs = [Path(r) for r in args.run] if args.run else [work / f"voice-{m:g}min" for m in args.minutes]
    for m, run in zip(args.minutes, runs, strict=False):
        if not args.run and not (run / "gencraft.json").is_file():
            t0 = time.time()
            cli("train", str(ds_path), "--model", "tts", "--preset", "small", "--out", str(run),
                "--max-time", str(m * 60), "-q")
            print(f"trained {run} in {time.time() - t0:.0f} s (budget {m:g} min; load average "
                  f"{os.getloadavg()[0]:.1f})", flush=True)
    if args.train_only:
        return
    for run in runs:  # quality of every budget's voice (MCD at 10 and 30 minutes beside the floors)
        info = json.loads((run / "gencraft.json").read_text())
        print(f"\n{run.name}: training", json.dumps(info["metrics"]), flush=True)
        voice = load_voice(run)
        sp = Speaker.load(str(run))
        if "quality" in args.parts:
            held_out_quality(ds, work, voice, sp)
    # ---- speed
    if "speed" in args.parts:
        para = ("The Ember Kettle boils a full liter in under four minutes. Its copper base spreads heat evenly. "
                "Made to last, and made for slow mornings. Residents are asked to use the Elm Street crossing.")
        twelve = "The town council voted on Tuesday to repair the old footbridge soon."
        print("\nspeed on 2 threads (best of 3)")
        for name, s in (("this voice", sp), ("espeak-ng", Speaker.load("espeak"))):
            synthesize(twelve, s)  # warm
            rtf = min(synthesize(para, s).rtf for _ in range(3))
            ttfa = min(synthesize(twelve, s).seconds_to_first_audio for _ in range(3))
            print(f"{name:12s} real-time factor {rtf:.4f}   time to first audio (12 words) {ttfa * 1000:.0f} ms",
                  flush=True)

    # ---- watermark: the alternating blocks beside the first scheme (the same comb in every frame)
    if "watermark" not in args.parts:
        return
    from gencraft.guard.audio import BLOCK_FRAMES, detect_audio, embed_audio
    from gencraft.guard.watermark import derive_key

    key = derive_key(os.urandom(32), "audio")
    texts = [u["text"] for u in ds.utterances][: args.wm_clips]
    print(f"\nwatermark on {len(texts)} clips of {run.name}: detected after 16 kHz resampling, -6 dB and 30 dB SNR "
          "noise (aim >= 95%); false positives on as many clean recordings of voice A (aim <= 1%)")
    for name, blocks in ((f"alternating every {BLOCK_FRAMES} frames", BLOCK_FRAMES), ("same comb every frame", 0)):
        rng = np.random.default_rng(0)
        hits = fps = 0
        zs = []
        for t, u in zip(texts, ds.utterances, strict=False):
            x = embed_audio(synthesize(t, sp).audio, key, block_frames=blocks)
            a = audio.resample(x, audio.SAMPLE_RATE, 16000) * 10 ** (-6 / 20)
            noise = rng.normal(size=len(a)).astype(np.float32)
            noise *= np.sqrt(np.mean(a ** 2) / np.mean(noise ** 2) / 10 ** (30 / 10))
            d = detect_audio(a + noise, key, 16000, block_frames=blocks)
            hits += d.detected
            zs.append(d.score)
            fps += detect_audio(ds.wav(u), key, block_frames=blocks).detected
        n = len(texts)
        print(f"{name:30s} detected {hits}/{n} = {hits / n:.0%} (z median {np.median(zs):.1f}, min {min(zs):.1f}); "
              f"false positives {fps}/{n} = {fps / n:.0%}", flush=True)


if __name__ == "__main__":
    main()

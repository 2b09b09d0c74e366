"""Speech datasets: LJSpeech and pair layouts, conversion, text normalization, phonemes, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gencraft import audio
from gencraft.data.speech import load_speech_dataset, prepare_speech
from gencraft.errors import DataError, UsageError
from gencraft.tokenize.phonemes import PhonemeTokenizer, normalize_en, normalize_zh, text_to_symbols


def test_english_normalization_writes_out_numbers_dates_money_and_abbreviations():
    t = normalize_en("On 3/5/2024 Dr. Smith paid $3.50 for 21st-century art at 10:30 pm, 35% off; 80,000 in 1984.")
    assert t == ("On March fifth, twenty twenty-four doctor Smith paid three dollars and fifty cents for "
                 "twenty-first-century art at ten thirty p m, thirty-five percent off; eighty thousand in "
                 "nineteen eighty-four.")
    assert normalize_en("It is -3°C, 3.14 km away.") == "It is minus three degrees Celsius, three point one four kilometers away."


def test_chinese_normalization_and_pinyin_with_tones():
    norm, syms = text_to_symbols("价格是¥12.5，增长了35%。")
    assert norm == "价格是十二点五元，增长了百分之三十五。"
    assert syms[:6] == ["j", "ia4", "g", "e2", "sh", "i4"] and "," in syms and syms[-1] == "."
    assert normalize_zh("2020年1月1日") == "二零二零年一月一日"


def test_english_phonemes_keep_stress_words_and_pauses():
    _, syms = text_to_symbols("Hello world, how are you?")
    assert "ˈ" in syms and " " in syms and "," in syms and syms[-1] == "?"
    tok = PhonemeTokenizer.build([syms], ["en"])
    ids, unknown = tok.encode(syms + ["§"])
    assert unknown == ["§"] and tok.decode(ids) == syms


def test_prepared_dataset_has_converted_audio_manifest_and_splits(speech_corpus):
    ds = load_speech_dataset(speech_corpus["dataset"])
    m = ds.manifest
    assert m["kind"] == "speech" and m["speaker"] == "espeak voice A" and m["license"] == "CC0-1.0"
    assert m["counts"] == {"found": 16, "kept": 16, "dropped": {}}
    assert all(len(s["sha256"]) == 64 and s["license"] == "CC0-1.0" for s in m["sources"])
    assert ds.split("val") and ds.split("train")
    u = ds.utterances[0]
    info = sf.info(str(ds.path / "wavs" / f"{u['id']}.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
    x = ds.wav(u)
    assert u["frames"] == audio.n_frames(len(x)) and abs(u["seconds"] - len(x) / 22050) < 1e-3
    assert all(i > 0 for i in ds.ids(u))


def _write(path: Path, x: np.ndarray, sr: int, subtype: str) -> None:
    sf.write(str(path), x, sr, subtype=subtype)


def test_bad_recordings_are_dropped_and_counted_others_converted(speech_corpus, tmp_path, cli):
    """A folder of pairs holding every kind of file a person might bring: the usable ones (8-bit,
    24-bit, float, stereo, 44.1 kHz FLAC) are converted; the rest are dropped with their reason."""
    src = speech_corpus["A"] / "wavs"
    wavs = sorted(src.glob("*.wav"))
    meta = dict(line.split("|")[:2] for line in (speech_corpus["A"] / "metadata.csv").read_text().splitlines())
    x, sr = sf.read(str(wavs[0]))
    d = tmp_path / "mine"
    d.mkdir()
    good = {"u8": ("PCM_U8", x, sr, ".wav"), "p24": ("PCM_24", x, sr, ".wav"), "flt": ("FLOAT", x, sr, ".wav"),
            "stereo": ("PCM_16", np.stack([x, x * 0.5], 1), sr, ".wav"),
            "hi": ("PCM_16", audio.resample(x.astype(np.float32), sr, 44100), 44100, ".flac")}
    for name, (sub, data, rate, ext) in good.items():
        _write(d / f"{name}{ext}", data, rate, sub)
        (d / f"{name}.txt").write_text(meta[wavs[0].stem])
    (d / "text.wav").write_text("I am not audio")
    (d / "text.txt").write_text("hello there")
    _write(d / "empty.wav", np.zeros(0), 22050, "PCM_16")
    (d / "empty.txt").write_text("hello there")
    _write(d / "nb.wav", audio.resample(x.astype(np.float32), sr, 8000), 8000, "PCM_16")
    (d / "nb.txt").write_text("hello there")
    _write(d / "long.wav", np.zeros(16000 * 600, dtype=np.int16), 16000, "PCM_16")  # 10 minutes
    (d / "long.txt").write_text("hello there")
    _write(d / "short.wav", x[: sr // 5], sr, "PCM_16")
    (d / "short.txt").write_text("hi")
    _write(d / "notext.wav", x, sr, "PCM_16")
    _write(d / "clip.wav", np.clip(x * 20, -1, 1), sr, "PCM_16")
    (d / "clip.txt").write_text("hello there")
    _write(d / "weird.wav", x, sr, "PCM_16")
    (d / "weird.txt").write_text("... !!! ...")
    r = cli("data", "speech", str(d), "--out", str(tmp_path / "ds"), "--license", "CC-BY-4.0", "--speaker", "Me", "-q")
    assert r.code == 0, r.err
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["counts"]["kept"] == 5
    assert m["counts"]["dropped"] == {"no_transcript": 1, "unphonemizable": 1, "unreadable": 1, "empty": 1,
                                      "low_sample_rate": 1, "too_long": 1, "too_short": 1, "clipped": 1}
    reasons = {Path(e["path"]).stem: e["reason"] for e in m["dropped"]}
    assert reasons["long"] == "too_long" and reasons["nb"] == "low_sample_rate" and reasons["text"] == "unreadable"
    lens = {len(sf.read(str(p))[0]) for p in (tmp_path / "ds" / "wavs").glob("*.wav")}
    assert max(lens) - min(lens) < 300  # the same recording at five bit depths/rates/layouts: same length


def test_unusable_inputs_are_one_line_errors_and_write_nothing(speech_corpus, tmp_path, cli):
    lj = tmp_path / "lj"
    shutil.copytree(speech_corpus["A"], lj)
    with open(lj / "metadata.csv", "a") as f:
        f.write("GCA-9999\n")  # one column
    out = tmp_path / "ds"
    r = cli("data", "speech", str(lj), "--out", str(out), "--license", "CC0-1.0", "--speaker", "A")
    assert r.code == 2 and "line 17" in r.err and "columns" in r.err and "Traceback" not in r.err
    assert not out.exists() and not list(tmp_path.glob(".ds*"))
    r = cli("data", "speech", str(speech_corpus["A"]), "--out", str(out), "--speaker", "A")
    assert r.code == 2 and "--license" in r.err
    with pytest.raises(UsageError, match="--license"):
        prepare_speech(speech_corpus["A"], out=out, license=" ", speaker="A")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.wav").write_text("not audio")
    (empty / "a.txt").write_text("hello")
    with pytest.raises(DataError, match="0 usable recording.*1 unreadable"):
        prepare_speech(empty, out=out, license="CC0-1.0", speaker="A")
    assert not out.exists()

"""Symbolic music: REMI round trip on a real chorale, MIDI/WAV writing, the grammar constraint,
music datasets and composing from a trained run."""

from __future__ import annotations

import json
import wave
from fractions import Fraction

import mido
import numpy as np
import pytest
import torch

from gencraft.apps.music_grammar import MusicGrammar
from gencraft.errors import DataError
from gencraft.music.events import EventError, Note, decode, encode, make_piece, to_text, transpose
from gencraft.music.metrics import note_density_distance, pitch_class_distance
from gencraft.music.midi import read_midi, read_score, write_midi
from gencraft.music.synth import render, write_wav
from gencraft.music.tokenizer import MusicTokenizer, is_music_tokenizer


def chorale_path(i: int = 0):
    from gencraft.data.music import music21_corpus_files

    return music21_corpus_files("bach")[i]


def test_chorale_round_trip_keeps_every_note():
    from music21 import converter

    path = chorale_path(0)
    piece = read_score(path)[0]
    back = decode(encode(piece), strict=True)
    assert back.notes == piece.notes and back.bars == piece.bars

    # every note of the score, read independently with music21 (onset shifted by the pickup)
    score = converter.parse(str(path), forceSource=True).stripTies()
    shift = Fraction(score.parts[0].getElementsByClass("Measure")[0].paddingLeft)
    expected: dict[tuple[int, int], int] = {}
    for el in score.flatten().notes:
        for p in el.pitches:
            key = (int((Fraction(el.offset) + shift) * 4), p.midi)
            expected[key] = max(expected.get(key, 0), int(Fraction(el.quarterLength) * 4))
    got = {(n.start, n.pitch): n.duration for n in back.notes}
    assert len(got) > 100
    assert got == expected


def test_tokenizer_round_trip_and_detection(tmp_path):
    tok = MusicTokenizer.build()
    piece = read_score(chorale_path(1))[0]
    text = to_text(piece)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert decode(tok.decode(ids)).notes == piece.notes
    tok.save(tmp_path / "tokenizer.json")
    assert is_music_tokenizer(tmp_path / "tokenizer.json")
    again = MusicTokenizer.load(tmp_path / "tokenizer.json")
    assert again.encode(text) == ids and again.eos_id == 0
    with pytest.raises(DataError, match="Pitch_60"):
        tok.encode("Bar Pos_0 Pich_60")


def test_strict_decode_rejects_broken_grammar():
    with pytest.raises(EventError, match="Dur"):
        decode("TS_4/4 Bar Pos_0 Pitch_60 Pos_4", strict=True)
    with pytest.raises(EventError, match="position"):
        decode("TS_4/4 Bar Pos_4 Pitch_60 Dur_1 Pos_2 Pitch_62 Dur_1", strict=True)
    # the lenient decoder skips the bad events and keeps the rest
    assert decode("TS_4/4 Bar Pos_0 Pitch_60 Pos_4 Pitch_62 Dur_2").notes == [Note(4, 62, 2)]


def test_transpose_keeps_rhythm_and_range():
    piece = make_piece([Note(0, 60, 4), Note(4, 64, 4)])
    up = transpose(piece, 3)
    assert [n.pitch for n in up.notes] == [63, 67] and [n.start for n in up.notes] == [0, 4]
    assert transpose(make_piece([Note(0, 126, 1)]), 3) is None


def test_midi_write_reload_with_mido(tmp_path):
    piece = read_score(chorale_path(0))[0]
    out = tmp_path / "chorale.mid"
    write_midi(piece, out, tempo_bpm=100)
    mid = mido.MidiFile(str(out))
    ons = [m for m in mid if m.type == "note_on" and m.velocity > 0]
    assert len(ons) == len(piece.notes)
    assert mid.length == pytest.approx(piece.length / 4 * 60 / 100, rel=1e-6)
    back = read_midi(out)
    assert back.notes == piece.notes


def test_corrupt_midi_is_one_line_error(tmp_path, cli):
    bad = tmp_path / "midi" / "broken.mid"
    bad.parent.mkdir()
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x10\x00\x90\x3c")
    with pytest.raises(DataError, match="broken.mid"):
        read_midi(bad)
    r = cli("data", "music", str(bad.parent), "--out", "x")
    assert r.code == 2
    assert "broken.mid" in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_wav_has_expected_length_and_sound(tmp_path):
    piece = make_piece([Note(0, 60, 8), Note(8, 67, 8), Note(16, 72, 16)], "4/4")
    audio = render(piece, tempo_bpm=120, sample_rate=8000)
    seconds = piece.length / 4 * 60 / 120  # 2 bars of 4/4 at 120 bpm = 4 s
    assert len(audio) == round(seconds * 8000) == 32000
    assert np.abs(audio).max() > 0.5 and np.sqrt((audio ** 2).mean()) > 0.05
    write_wav(audio, tmp_path / "a.wav", 8000)
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert w.getnframes() == 32000 and w.getframerate() == 8000 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert np.abs(pcm).max() > 10000


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grammar_keeps_random_sampling_well_formed(seed):
    """Sampling from random logits through the constraint always gives N complete bars."""
    tok = MusicTokenizer.build()
    bars = 3
    prompt = [tok.eos_id, tok.vocab["TS_3/4"]]
    budget = 60
    grammar = MusicGrammar(tok, bars, prompt_length=len(prompt), max_new_tokens=budget)
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([prompt, prompt])
    for _ in range(budget):
        logits = grammar(ids, torch.randn(2, tok.vocab_size, generator=g) * 3)
        nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=g)
        ids = torch.cat([ids, nxt], 1)
    for row in ids.tolist():
        gen = row[len(prompt):]
        assert tok.eos_id in gen, "the piece was not closed within the budget"
        text = "TS_3/4 " + tok.decode(gen[:gen.index(tok.eos_id)])
        piece = decode(text, strict=True)
        assert piece.bars == bars
        assert all(n.start + n.duration <= piece.length for n in piece.notes)


def test_metrics_zero_on_identical_and_positive_on_different():
    a = [make_piece([Note(0, 60, 4), Note(4, 64, 4), Note(8, 67, 4)])]
    b = [make_piece([Note(0, 61, 4)])]
    assert pitch_class_distance(a, a) == 0.0 and note_density_distance(a, a) == 0.0
    assert pitch_class_distance(a, b) == pytest.approx(1.0)
    assert note_density_distance(a, b) == pytest.approx(2.0)


def test_data_music_from_music21_corpus(cli, gencraft_home):
    r = cli("data", "music", "music21:bach", "--out", "bach", "--limit", "6", "--transpose", "2")
    assert r.code == 0, r.err
    ds = gencraft_home / "datasets" / "bach"
    m = json.loads((ds / "manifest.json").read_text())
    assert m["tokenizer"]["kind"] == "music" and m["tokenizer"]["eos_id"] == 0
    assert len(m["sources"]) == 6 and all(s["sha256"] and "public-domain" in s["license"] for s in m["sources"])
    docs = [json.loads(x) for x in (ds / "documents.jsonl").read_text().splitlines()]
    val = [d for d in docs if d["split"] == "val"]
    train = [d for d in docs if d["split"] == "train"]
    assert len(val) == 1 and all(d["transpose"] == 0 for d in val)  # augmentation: training pieces only
    assert {d["transpose"] for d in train} == {-2, -1, 0, 1, 2}
    ids = np.fromfile(ds / "train.bin", dtype="<u2")
    assert len(ids) == m["splits"]["train"]["tokens"]
    tok = MusicTokenizer.load(ds / "tokenizer.json")
    first = ids[: list(ids).index(tok.eos_id)]
    assert tok.decode(first.tolist()) == train[0]["text"]
    r = cli("data", "music", str(gencraft_home / "nothing-here"), "--out", "y")
    assert r.code == 2 and "nothing-here" in r.err


@pytest.fixture
def music_run(gencraft_home):
    """A tiny GPT trained briefly on six chorales through the ordinary text training loop."""
    from gencraft.data.music import prepare_music
    from gencraft.train.loop import train

    ds = prepare_music(["music21:bach"], out="bach6", limit=6, transpose_range=1)
    return train(ds, model="gpt", preset="tiny", out="bach-gpt", progress=False,
                 overrides=["max_iters=40", "eval_interval=40", "eval_iters=2", "num_threads=1"])


def test_compose_writes_wellformed_midi_wav_and_provenance(music_run, tmp_path, cli):
    out = tmp_path / "tune.mid"
    r = cli("compose", str(music_run), "--bars", "4", "--seed", "0", "--out", str(out), "--wav",
            "--tempo", "120", "--time-signature", "3/4")
    assert r.code == 0, r.err
    mid = mido.MidiFile(str(out))  # reloads as a valid standard MIDI file
    assert mid.length == pytest.approx(4 * 3 * 60 / 120)  # exactly 4 bars of 3/4 at 120 bpm
    back = read_midi(out)
    assert back.time_signature == "3/4" and back.bars == 4
    ons = sum(1 for m in mid if m.type == "note_on" and m.velocity > 0)
    offs = sum(1 for m in mid if m.type == "note_off")
    assert ons == offs  # every note is ended
    with wave.open(str(out.with_suffix(".wav"))) as w:
        assert w.getnframes() == round(6.0 * w.getframerate())
    man = json.loads((tmp_path / "tune.mid.manifest.json").read_text())
    import hashlib
    assert man["content_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert man["kind"] == "music" and man["seed"] == 0 and man["parameters"]["bars"] == 4
    assert man["sources"] and "public-domain" in man["sources"][0]["license"]
    assert (tmp_path / "tune.wav.manifest.json").is_file()
    # same seed, same tune
    again = tmp_path / "again.mid"
    assert cli("compose", str(music_run), "--bars", "4", "--seed", "0", "--out", str(again), "--tempo", "120",
               "--time-signature", "3/4").code == 0
    assert again.read_bytes() == out.read_bytes()
    r = cli("compose", str(music_run), "--bars", "0", "--out", str(tmp_path / "x.mid"))
    assert r.code == 2 and "--bars" in r.err
    # training's samples were drawn as piano rolls and synthesized (the studio shows those, not events)
    assert sorted(p.name for p in (music_run / "samples").glob("music_000040_*")) == [
        "music_000040_0.png", "music_000040_0.wav", "music_000040_1.png", "music_000040_1.wav"]


def test_data_music_from_a_midi_folder(tmp_path, gencraft_home):
    from gencraft.data.music import prepare_music

    folder = tmp_path / "tunes"
    folder.mkdir()
    pieces = [make_piece([Note(4 * i + k, 60 + k + i, 2) for k in range(4)], "4/4") for i in range(3)]
    for i, p in enumerate(pieces):
        write_midi(p, folder / f"t{i}.mid")
    (folder / "notes.txt").write_text("not music, ignored")
    ds = prepare_music([str(folder)], out="tunes", transpose_range=0, val_fraction=0.34, license="CC0-1.0")
    docs = [json.loads(x) for x in (ds / "documents.jsonl").read_text().splitlines()]
    assert sorted(d["text"] for d in docs) == sorted(to_text(p) for p in pieces)
    m = json.loads((ds / "manifest.json").read_text())
    assert [s["license"] for s in m["sources"]] == ["CC0-1.0"] * 3
    assert m["splits"]["val"]["documents"] == 1

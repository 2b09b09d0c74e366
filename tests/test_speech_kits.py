"""The kits speak: dialogue lines per character, 15/30-second ad spots that never run over, drafts read aloud."""

from __future__ import annotations

import json

import soundfile as sf

from gencraft.apps.ads import Variant
from gencraft.apps.voiceover import audio_spots, read_aloud, voice_dialogue

DIALOGUE = {"title": "At the ford", "start": "n1", "nodes": [
    {"id": "n1", "speaker": "Kethra", "text": "The river is high tonight.", "choices": [{"text": "Wait", "next": "n2"}],
     "end": False},
    {"id": "n2", "speaker": "Old Vell", "text": "Then we cross at dawn, when the Veyl sleep.", "choices": [],
     "end": True}]}


def test_dialogue_lines_become_wavs_with_a_voice_per_character(tmp_path, cli):
    assert cli("keys", "init").code == 0
    out = tmp_path / "ford.json"
    out.write_text(json.dumps([DIALOGUE]))
    folder = voice_dialogue([DIALOGUE], "espeak", out)
    index = json.loads((tmp_path / "ford.voice.json").read_text())
    assert [e["node"] for e in index] == ["n1", "n2"] and index[0]["voice"] != index[1]["voice"]
    for e in index:
        wav = tmp_path / e["file"]
        assert wav.parent == folder and sf.info(str(wav)).duration > 1.0
        assert cli("verify", str(wav)).code == 0


def test_audio_spots_last_exactly_15_and_30_seconds_and_never_more(tmp_path, cli):
    assert cli("keys", "init").code == 0
    short = Variant("audio", "Meet the Ember Kettle", "It boils a liter in four minutes and whistles softly.",
                    "Order now")
    long = Variant("audio", "Meet the Ember Kettle", " ".join(["It boils a full liter in under four minutes, "
                                                                "on gas, induction or an open camp stove."] * 6),
                   "Order now")
    made = audio_spots([short, long], "espeak", tmp_path / "spot.wav")
    assert len(made) == 4
    for m in made:
        info = sf.info(m["file"])
        assert info.samplerate == 22050 and abs(info.duration - m["seconds"]) < 1e-3
        assert m["spoken_seconds"] <= m["seconds"]
        assert cli("verify", m["file"]).code == 0
    long30 = next(m for m in made if m["variant"] == 1 and m["seconds"] == 30)
    assert long30["speed"] > 1.0 or "boils" not in long30["script"]  # read faster, or the description dropped
    assert "boils" not in made[0]["script"]  # a 15-second spot is headline + call to action


def test_a_draft_read_aloud(tmp_path, cli):
    assert cli("keys", "init").code == 0
    draft = "# The Vale of Kethren\n\nIn the valley the river Oss runs slow and **green**.\n\n- Farmers leave milk.\n"
    r = read_aloud(draft, "espeak", tmp_path / "vale.wav")
    assert r.extra["sentences"] == 3
    assert cli("verify", str(tmp_path / "vale.wav")).code == 0


def test_voice_options_refuse_what_cannot_be_spoken(tmp_path, cli):
    r = cli("game", "npc", "nowhere", "--voice", "espeak", "--out", str(tmp_path / "x.json"))
    assert r.code == 2 and "--voice" in r.err

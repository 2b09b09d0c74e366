"""One release step for every output: every output command, the Python API and every endpoint produce
an artifact that `gencraft verify` accepts and whose watermark `gencraft guard watermark detect` finds.

One GENCRAFT_HOME for the module (keys made once, before the server starts: it reads them at
startup), random-weight runs (a char GPT, a 32x32 DCGAN, a music GPT): high-entropy samplers, so
200 tokens carry a clear watermark.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from importlib import resources
from pathlib import Path

import httpx
import pytest
import torch

pytest.importorskip("fastapi")
from test_server import LiveServer  # noqa: E402

from gencraft.server import ServerConfig  # noqa: E402


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gencraft.guard.keys import init_keys
    from gencraft.models.dcgan import DCGAN, DCGANConfig
    from gencraft.models.gpt import GPT, GPTConfig
    from gencraft.music.tokenizer import MusicTokenizer
    from gencraft.runs import save_weights, write_info

    home = tmp_path_factory.mktemp("release")
    mp = pytest.MonkeyPatch()
    mp.setenv("GENCRAFT_HOME", str(home))
    init_keys()
    # a fixed watermark secret: the tests' p-value thresholds then hold for this key, every run (with a
    # fresh random secret each run, a 1e-3 threshold on unmarked audio failed about once in a thousand)
    (home / "keys" / "watermark.key").write_text("5e" * 32 + "\n")
    mp.undo()
    make_sampler_run(home / "runs" / "tiny")
    torch.manual_seed(0)
    cfg = DCGANConfig(img_size=32, channels=3, z_dim=16, g_ch=8, d_ch=8)
    (home / "runs" / "pixels").mkdir()
    save_weights(DCGAN(cfg), home / "runs" / "pixels" / "model.safetensors")
    write_info(home / "runs" / "pixels", {"kind": "dcgan", "run_id": "pixels", "model": dataclasses.asdict(cfg),
                                          "image": {"size": 32, "channels": 3}})
    tok = MusicTokenizer.build()
    mcfg = GPTConfig(vocab_size=tok.vocab_size, block_size=512, n_layer=1, n_head=2, n_embd=32)
    (home / "runs" / "tunes").mkdir()
    save_weights(GPT(mcfg), home / "runs" / "tunes" / "model.safetensors")
    tok.save(home / "runs" / "tunes" / "tokenizer.json")
    write_info(home / "runs" / "tunes", {"kind": "gpt", "run_id": "tunes", "model": dataclasses.asdict(mcfg),
                                         "tokenizer": {"kind": "music", "vocab_size": tok.vocab_size,
                                                       "eos_id": tok.eos_id}})
    return home


def make_sampler_run(path: Path) -> None:
    """A random char GPT that samples many different letters at every step (about 3 nats) and almost
    never ends the text: every command gets its 200 tokens, and a watermark has entropy to use."""
    import numpy as np

    from gencraft.models.gpt import GPT, GPTConfig
    from gencraft.runs import SEEN_FILE, save_weights, write_info
    from gencraft.tokenize import train_tokenizer

    text = "the quick brown fox jumps over a lazy dog. pack my box with five dozen liquor jugs! "
    tok = train_tokenizer("char", [text * 3])
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=512, n_layer=1, n_head=2, n_embd=32, bias=True,
                    tie_weights=False)
    m = GPT(cfg)
    seen = np.zeros(tok.vocab_size, dtype=bool)
    seen[list(set(tok.encode(text)))] = True
    with torch.no_grad():
        v = torch.randn(32)
        m.ln_f.weight.fill_(0.3)  # the output leans on a fixed direction v, a little on the context
        m.ln_f.bias.copy_(v)
        w = torch.randn(tok.vocab_size, 32) / v.norm()
        w[~torch.from_numpy(seen)] = -6 * v / v.norm() ** 2  # bytes never seen: logit -6
        w[tok.eos_id] = -6 * v / v.norm() ** 2
        m.lm_head.weight.copy_(w)
    path.mkdir(parents=True)
    save_weights(m, path / "model.safetensors")
    tok.save(path / "tokenizer.json")
    with open(path / SEEN_FILE, "wb") as f:
        np.save(f, seen, allow_pickle=False)
    write_info(path, {"kind": "gpt", "run_id": path.name, "model": dataclasses.asdict(cfg),
                      "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id},
                      "data": {"sources": [{"path": "pangrams.txt", "sha256": "0" * 64, "license": "CC0-1.0"}]}})


@pytest.fixture(scope="module")
def server(home: Path):
    with LiveServer(ServerConfig(auth=False, home=home, rate_per_minute=0)) as s:
        yield s


@pytest.fixture(autouse=True)
def in_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENCRAFT_HOME", str(home))


def released_text(path: Path, item: dict) -> Path:
    """A server's released text and its manifest as the file pair `gencraft verify` reads."""
    from gencraft.io import write_json

    path.write_text(item["text"], encoding="utf-8")
    write_json(path.with_name(path.name + ".manifest.json"), item["manifest"])
    return path


def cli_artifact(*args: str, artifact: str):
    """Run a command; the artifact is the file at ``artifact`` under OUT (the first match of a pattern)."""
    def make(cli, out: Path, server: LiveServer) -> Path:
        res = cli(*[a.replace("OUT", str(out)) for a in args])
        assert res.code == 0, res.err
        return sorted(out.glob(artifact))[0]
    return make


def api_generate_text(cli, out: Path, server: LiveServer) -> Path:
    import gencraft

    [rel] = gencraft.generate_text("tiny", "The cat ", max_new_tokens=200, seed=4, out=out / "api.txt")
    assert rel.signed and rel.watermarked and rel.item_id
    return rel.path


def endpoint(route: str, body: dict, pick=None):
    """POST ``body``; the artifact is what ``pick`` makes of the answer, else the text and manifest
    the release step stored in the library (the newest item)."""
    def make(cli, out: Path, server: LiveServer) -> Path:
        r = httpx.post(server.url + route, json=body, timeout=120)
        assert r.status_code == 200, r.text
        if pick is not None:
            return pick(r.json(), out)
        item = httpx.get(server.url + "/v1/gencraft/library", params={"limit": 1}).json()["data"][0]
        return released_text(out / "served.txt", item)
    return make


def api_speak(cli, out: Path, server: LiveServer) -> Path:
    import gencraft

    r = gencraft.speak("The ferry leaves at noon. Bring a coat.", "espeak:en-us+f3", out=out / "api.wav", seed=2)
    assert r.signed and r.watermarked and r.item_id and len(r.sentences) == 2
    return r.path


def served_wav(out: Path, data: bytes, manifest: dict) -> Path:
    """Served audio and its manifest as the file pair `gencraft verify` reads."""
    from gencraft.io import write_json

    (out / "served.wav").write_bytes(data)
    write_json(out / "served.wav.manifest.json", manifest)
    return out / "served.wav"


def speech_endpoint(body: dict):
    """POST /v1/audio/speech; a WAV comes with its manifest in a header, streamed PCM is read back from
    the library (where the release step stored it, manifest and all)."""
    def make(cli, out: Path, server: LiveServer) -> Path:
        r = httpx.post(server.url + "/v1/audio/speech", json=body, timeout=120)
        assert r.status_code == 200, r.text
        if body["response_format"] == "wav":
            return served_wav(out, r.content, json.loads(base64.b64decode(r.headers["x-gencraft-manifest"])))
        item = httpx.get(server.url + "/v1/gencraft/library", params={"limit": 1}).json()["data"][0]
        assert item["media_type"] == "audio/wav" and item["kind"] == "speech" and item["prompt"] == body["input"]
        content = httpx.get(server.url + item["content_url"])  # a listing holds no bytes: the item's content URL
        assert content.headers["content-type"] == "audio/wav" and len(content.content) == item["content_bytes"]
        return served_wav(out, content.content, item["manifest"])
    return make


def png_from(data: dict, out: Path) -> Path:
    (out / "served.png").write_bytes(base64.b64decode(data["data"][0]["b64_json"]))
    return out / "served.png"


MAPS = str(resources.files("gencraft") / "assets" / "maps")  # four maps of 24x16 read z ~ 9 (one: ~4.5)
TEXT = {"model": "tiny", "max_tokens": 200, "seed": 3, "temperature": 1.0}
CASES = {
    "generate": cli_artifact("generate", "tiny", "-p", "The cat ", "-m", "200", "--seed", "1", "--out", "OUT/g.txt",
                             artifact="g.txt"),
    "write-continue": cli_artifact("write", "continue", "tiny", "--text", "The sea was calm", "--tokens", "200",
                                   "--out", "OUT/w.txt", artifact="w.txt"),
    "write-draft": cli_artifact("write", "draft", "tiny", "--title", "Boats", "--heading", "Harbour",
                                "--section-tokens", "200", "--out", "OUT/d.md", artifact="d.md"),
    "game-records": cli_artifact("game", "npc", "tiny", "-n", "2", "--out", "OUT/npc.json", artifact="npc.json"),
    "ads-csv": cli_artifact("ads", "tiny", "--product", "Acme", "-n", "3", "--out", "OUT/ads.csv",
                            artifact="ads.csv"),
    "ads-image": cli_artifact("ads", "tiny", "--product", "Acme", "-n", "1", "--image", "pixels", "--out",
                              "OUT/a.json", artifact="ad_images/ad_01_square.png"),
    "imagine": cli_artifact("imagine", "pixels", "--n", "4", "--out", "OUT/grid.png", artifact="grid.png"),
    "imagine-gif": cli_artifact("imagine", "pixels", "--interpolate", "1", "2", "--frames", "3", "--upscale", "2",
                                "--out", "OUT/walk.gif", artifact="walk.gif"),
    "sprites": cli_artifact("game", "sprites", "pixels", "-n", "1", "--size", "48", "--out", "OUT/sp",
                            artifact="sp/sprite_000.png"),
    "compose-midi": cli_artifact("compose", "tunes", "--bars", "8", "--out", "OUT/t.mid", artifact="t.mid"),
    # the WAV rendered from a composed MIDI, marked with the audio watermark: a chorale's steady tones hid the
    # first scheme's comb (z ~ 1-2); the alternating blocks cancel what every frame shares and find it
    "compose-wav": cli_artifact("compose", "tunes", "--bars", "8", "--wav", "--out", "OUT/t.mid", artifact="t.wav"),
    # speech: the command (whole and streamed), the Python API, the kits' voices, the endpoint
    "speak": cli_artifact("speak", "espeak", "Welcome to Harlow Bend. The bridge opens at nine.", "--out",
                          "OUT/s.wav", artifact="s.wav"),
    "speak-stream": cli_artifact("speak", "espeak:en+m1", "One line. Then another line, a little longer.",
                                 "--stream", "--out", "OUT/s.wav", artifact="s.wav"),
    "game-dialogue-voice": cli_artifact("game", "dialogue", "tiny", "-n", "1", "--out", "OUT/d.json", "--voice",
                                        "espeak", artifact="d.voice/*.wav"),
    "ads-audio": cli_artifact("ads", "tiny", "--product", "Acme", "-n", "1", "--channel", "audio", "--voice",
                              "espeak", "--out", "OUT/a.json", artifact="a_v1_15s.wav"),
    "write-read-aloud": cli_artifact("write", "continue", "tiny", "--text", "The sea was calm", "--tokens", "120",
                                     "--out", "OUT/w.txt", "--read-aloud", "espeak", artifact="w.wav"),
    "api-speak": api_speak,
    "game-map": cli_artifact("game", "map", "--examples", MAPS, "-n", "4", "--out", "OUT/m.txt", artifact="m.txt"),
    "game-map-json": cli_artifact("game", "map", "--examples", MAPS, "-n", "4", "--out", "OUT/m.json",
                                  artifact="m.json"),
    "api-generate_text": api_generate_text,
    "completions": endpoint("/v1/completions", {**TEXT, "prompt": "The cat "}),
    "chat": endpoint("/v1/chat/completions", {**TEXT, "messages": [{"role": "user", "content": "hi"}]}),
    "images": endpoint("/v1/images/generations", {"model": "pixels", "n": 1, "seed": 2}, png_from),
    "kit-write": endpoint("/v1/gencraft/write", {"model": "tiny", "text": "The sea", "tokens": 200, "seed": 1},
                          lambda d, out: released_text(out / "kw.txt", d)),
    "kit-game": endpoint("/v1/gencraft/game/npc", {"model": "tiny", "n": 1, "seed": 1},
                         lambda d, out: released_text(out / "kg.txt", {
                             "text": json.dumps(d["data"][0]["record"], ensure_ascii=False),
                             "manifest": d["data"][0]["manifest"]})),
    "kit-ads": endpoint("/v1/gencraft/ads", {"model": "tiny", "brief": {"product": "Acme"}, "n": 1, "seed": 1}),
    "audio-speech": speech_endpoint({"model": "espeak", "voice": "nova", "input": "Hello from the server.",
                                     "response_format": "wav"}),
    "audio-speech-stream": speech_endpoint({"model": "espeak", "voice": "onyx", "response_format": "pcm",
                                            "input": "A long answer, streamed as it is spoken. " * 12}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_output_is_released_signed_and_watermarked(case: str, cli, server: LiveServer, tmp_path: Path) -> None:
    path = CASES[case](cli, tmp_path, server)
    v = cli("verify", path, "--json")
    assert v.code == 0, v.out + v.err
    manifest = json.loads(v.out)["manifest"]
    assert manifest["signature"]["alg"] == "Ed25519"
    if case == "compose-wav" and manifest["watermark"] is None:
        return
    assert manifest["watermark"]["key_id"]
    d = cli("guard", "watermark", "detect", path, "--json")
    assert d.code == 0, d.out + d.err
    assert json.loads(d.out)["p_value"] <= 1e-4


GREEDY = {
    "write-continue": (("write", "continue", "tiny", "--text", "The sea", "--tokens", "60", "-t", "0", "--out",
                        "OUT/w.txt"), "w.txt"),
    "game-records": (("game", "npc", "tiny", "-n", "1", "-t", "0", "--out", "OUT/npc.json"), "npc.json"),
    "ads-csv": (("ads", "tiny", "--product", "Acme", "-n", "2", "-t", "0", "--out", "OUT/ads.csv"), "ads.csv"),
    "compose-midi": (("compose", "tunes", "--bars", "2", "--temperature", "0", "--out", "OUT/t.mid"), "t.mid"),
}


@pytest.mark.parametrize("case", list(GREEDY))
def test_greedy_kits_claim_no_mark(case: str, cli, tmp_path: Path) -> None:
    """Greedy decoding makes no draw for the tournament to key: the kits' manifests say no watermark
    (they recorded one that was not there), and verify still accepts the signed file."""
    args, artifact = GREEDY[case]
    res = cli(*[a.replace("OUT", str(tmp_path)) for a in args])
    assert res.code == 0, res.err
    v = cli("verify", tmp_path / artifact, "--json")
    assert v.code == 0, v.out + v.err
    manifest = json.loads(v.out)["manifest"]
    assert manifest["signature"]["alg"] == "Ed25519" and manifest["watermark"] is None


def test_policy_gives_no_tournament_to_greedy_decoding(home: Path) -> None:
    from gencraft import guard

    with guard.ReleasePolicy(store=False) as policy:
        assert policy.text_watermark(50) is not None
        for greedy in ({"temperature": 0}, {"num_beams": 3}, {"top_k": 1}):
            assert policy.text_watermark(50, **greedy) is None, greedy
    with guard.ReleasePolicy(store=False, watermark_scheme="green-list") as policy:  # biases the argmax too
        assert policy.text_watermark(50, temperature=0) is not None


def test_tonal_audio_is_marked_and_never_claimed_unread(home: Path, tmp_path: Path) -> None:
    """A synthesized chorale (pure tones) is released with a mark that reads back as written; audio
    that cannot carry it (half a second)
    is written as it came, manifest null: a mark is never claimed that detection does not find."""
    import numpy as np
    from music21 import corpus

    from gencraft import guard
    from gencraft.guard.audio import detect_audio, wav_samples
    from gencraft.guard.watermark import derive_key
    from gencraft.music.midi import read_score
    from gencraft.music.synth import render, wav_bytes

    chorale = wav_bytes(render(read_score(corpus.getComposer("bach")[0])[0], 90.0, 22050), 22050)
    with guard.ReleasePolicy(store=False) as policy:
        rel = guard.release(chorale, kind="audio", label="music", policy=policy, out=tmp_path / "c.wav")
        short = guard.release(chorale[:44 + 22050], kind="audio", label="music", policy=policy)
        key = derive_key(policy.keys.watermark_secret, "audio")
    assert rel.manifest["watermark"]["key_id"] and short.manifest["watermark"] is None
    assert short.data == chorale[:44 + 22050]
    marked, clean = (wav_samples(d)[0].astype(np.float32) / 32768 for d in (rel.data, chorale))
    assert detect_audio(marked, key).p_value <= 1e-4 and detect_audio(clean, key).p_value > 1e-3
    other = derive_key(b"x" * 32, "audio")
    assert detect_audio(marked, other).p_value > 1e-3


def test_unmarked_maps_read_as_unmarked(home: Path) -> None:
    """The grid detector's null: maps drawn without the key score as chance (z ~ N(0, 1))."""
    from gencraft import guard
    from gencraft.apps import maps
    from gencraft.guard.tournament import GridWatermark, detect_grid

    examples = maps.load_maps([MAPS])
    grids = [maps.generate_map(examples, seed=1000 * i).grid for i in range(4)]
    with guard.ReleasePolicy(store=False) as policy:
        wm = policy.grid_watermark()
    assert isinstance(wm, GridWatermark) and detect_grid(grids, wm.rule).p_value > 1e-4

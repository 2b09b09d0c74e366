"""POST /v1/audio/speech through the official ``openai`` client: a trained voice and espeak-ng,
wav/pcm/flac, watermark and manifest, the library, and OpenAI-shaped errors."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import soundfile as sf

openai = pytest.importorskip("openai")

from test_server import LiveServer  # noqa: E402

from gencraft.server import ServerConfig  # noqa: E402


@pytest.fixture(scope="module")
def speech_server(speech_corpus, tmp_path_factory):
    from gencraft.guard.keys import init_keys
    from gencraft.train.speech import train_speech

    home = tmp_path_factory.mktemp("speech-studio")
    train_speech(speech_corpus["dataset"], preset="tiny", out=home / "runs" / "voice-a", progress=False,
                 overrides=["acoustic.max_iters=4", "acoustic.eval_interval=4", "vocoder.max_iters=2",
                            "vocoder.eval_interval=2", "num_threads=1"])
    import os

    old = os.environ.get("GENCRAFT_HOME")
    os.environ["GENCRAFT_HOME"] = str(home)
    init_keys()
    with LiveServer(ServerConfig(auth=False, home=home, rate_per_minute=0)) as s:
        yield s
    if old is not None:
        os.environ["GENCRAFT_HOME"] = old


@pytest.fixture
def client(speech_server):
    return openai.OpenAI(base_url=speech_server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_openai_client_speaks_with_a_trained_voice_and_espeak(client, speech_server, tmp_path, monkeypatch):
    monkeypatch.setenv("GENCRAFT_HOME", str(speech_server.gc.home))
    models = {m.id: m for m in client.models.list().data}
    assert models["voice-a"].model_extra["capabilities"] == ["audio.speech"]
    r = client.audio.speech.create(model="voice-a", voice="default", input="Hello there. The river runs slow.",
                                   response_format="wav")
    x, sr = sf.read(io.BytesIO(r.content), dtype="int16")
    assert sr == 22050 and len(x) > 1000
    manifest = json.loads(base64.b64decode(r.response.headers["x-gencraft-manifest"]))
    assert manifest["media_type"] == "audio/wav" and "signature" in manifest
    out = tmp_path / "a.wav"
    out.write_bytes(r.content)
    (tmp_path / "a.wav.manifest.json").write_text(json.dumps(manifest))
    from gencraft.guard import verify_file

    assert verify_file(out).status == "valid"
    r = client.audio.speech.create(model="espeak", voice="nova", input="Welcome to Harlow Bend.",
                                   response_format="pcm", speed=1.2)
    pcm = np.frombuffer(r.content, dtype="<i2")
    assert len(pcm) > 22050 * 0.5
    from gencraft.guard.audio import detect_audio
    from gencraft.guard.keys import load_keys
    from gencraft.guard.watermark import derive_key

    key = derive_key(load_keys().watermark_secret, "audio")
    assert detect_audio(pcm.astype(np.float32) / 32767, key).detected
    r = client.audio.speech.create(model="espeak", voice="cmn", input="你好，欢迎。", response_format="flac")
    assert sf.read(io.BytesIO(r.content))[1] == 22050
    # a long text streams as PCM sentence by sentence
    with client.audio.speech.with_streaming_response.create(
            model="espeak", voice="alloy", input="One more line of speech. " * 30, response_format="pcm") as resp:
        chunks = [c for c in resp.iter_bytes() if c]
    assert len(b"".join(chunks)) > 22050 * 2 * 10


def test_speech_errors_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="no-such-voice", voice="default", input="hello")
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="voice-a", voice="alloy", input="hello")
    assert e.value.body["param"] == "voice"
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="espeak", voice="xx-nope", input="hello")
    assert e.value.body["param"] == "voice"
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="espeak", voice="alloy", input="   ")
    assert e.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="espeak", voice="alloy", input="hi", response_format="mp3")
    assert e.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="espeak", voice="alloy", input="hi", speed=9)
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="espeak", voice="alloy", input="x" * 100_001)

"""Trust in signatures: `gencraft verify` has three answers with three exit codes — valid and signed by a
trusted key (this machine's, or one added with `gencraft keys trust`), intact but signed by an unknown
key, tampered or unsigned — and the server's verify endpoint says the same."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from gencraft.guard.keys import init_keys
from gencraft.guard.provenance import build_manifest, sidecar_path, sign_manifest, text_sha256


def signed_text(path: Path, text: str, keys) -> Path:
    """A text and its signed sidecar manifest, as the release step writes them."""
    manifest = sign_manifest(build_manifest(content_sha256=text_sha256(text), kind="text"), keys)
    path.write_text(text, encoding="utf-8")
    sidecar_path(path).write_text(json.dumps(manifest), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path, gencraft_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Files signed by someone else's key (made in another home), then this machine's keys."""
    other_home = tmp_path / "alice-home"
    monkeypatch.setenv("GENCRAFT_HOME", str(other_home))
    alice = init_keys(name="alice")
    out = {"alice": signed_text(tmp_path / "alice.txt", "A tale of two kettles.", alice),
           "alice_key": other_home / "keys" / "signing.pub"}
    monkeypatch.setenv("GENCRAFT_HOME", str(gencraft_home))
    mine = init_keys()
    out["mine"] = signed_text(tmp_path / "mine.txt", "My own words.", mine)
    out["tampered"] = signed_text(tmp_path / "tampered.txt", "Before.", mine)
    out["tampered"].write_text("After.")
    out["unsigned"] = tmp_path / "unsigned.txt"
    out["unsigned"].write_text("No manifest at all.")
    return out


def test_three_answers_three_exit_codes(files: dict[str, Path], cli):
    for name, code, word in (("mine", 0, "valid"), ("alice", 3, "unknown_key"), ("tampered", 1, "tampered"),
                             ("unsigned", 1, "unsigned")):
        res = cli("verify", str(files[name]))
        assert res.code == code and res.out.startswith(word), (name, res.out, res.err)
    assert "gencraft keys trust FILE" in cli("verify", str(files["alice"])).out

    assert cli("keys", "trust", str(files["alice_key"]), "--name", "alice").code == 0
    res = cli("verify", str(files["alice"]))
    assert res.code == 0 and "trusted key 'alice'" in res.out
    kid = json.loads(cli("verify", str(files["alice"]), "--json").out)["key_id"]
    assert kid in cli("keys", "trusted").out
    assert cli("keys", "untrust", kid).code == 0
    assert cli("verify", str(files["alice"])).code == 3


def test_a_key_file_that_is_not_a_key_is_one_line(files: dict[str, Path], cli, tmp_path: Path):
    for bad in (files["mine"], tmp_path, tmp_path / "missing.pub"):
        res = cli("keys", "trust", str(bad))
        assert res.code == 2 and len(res.err.strip().splitlines()) == 1 and "Traceback" not in res.err, res.err
    assert cli("keys", "untrust", "0123456789abcdef").code == 2


def test_the_server_says_the_same(files: dict[str, Path], gencraft_home: Path):
    from fastapi.testclient import TestClient

    from gencraft.server import ServerConfig, create_app

    with TestClient(create_app(ServerConfig(auth=False, home=gencraft_home, rate_per_minute=0))) as c:
        for name, status in (("mine", "valid"), ("alice", "unknown_key"), ("tampered", "tampered"),
                             ("unsigned", "unsigned")):
            f = files[name]
            side = f.with_name(f.name + ".manifest.json")
            body = {"filename": f.name, "content_b64": base64.b64encode(f.read_bytes()).decode(),
                    "manifest": json.loads(side.read_text()) if side.exists() else None}
            r = c.post("/v1/gencraft/verify", json=body)
            assert r.status_code == 200 and r.json()["status"] == status, (name, r.text)
        r = c.post("/v1/gencraft/verify", json={"content_b64": "not base64!", "filename": "x.txt"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "content_b64"

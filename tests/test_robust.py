"""Nothing lost, nothing unexplained: the breakages found by trying gencraft as a hostile user would
(issue 18), each one a test — bad settings, bad files on disk, sizes without bounds, code from files."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import httpx
import pytest
from test_server import LiveServer, make_image_run, make_text_run
from test_train import corpus, fast

from gencraft.errors import DataError, RunError, TrainingDiverged


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A dataset made the real way (`data prepare`, char tokenizer) from a small learnable corpus."""
    from gencraft.data import prepare

    (tmp_path / "corpus.txt").write_text("\n".join(corpus()), encoding="utf-8")
    return prepare([tmp_path / "corpus.txt"], tmp_path / "ds", license="CC0-1.0", unit="line")


@pytest.fixture
def run(dataset: Path) -> Path:
    from gencraft.train.loop import train

    return train(dataset, out="r", progress=False, overrides=fast("max_iters=10", "eval_interval=10"))


def one_line(res) -> str:
    """The error line of a failed command (one; warnings such as 'unsigned: no keys' may precede it)."""
    assert res.code == 2, (res.code, res.err)
    lines = [ln for ln in res.err.strip().splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in res.err, res.err
    return lines[0]


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("args, word", [
    (["--set", "learning_rate=nan"], "learning_rate"), (["--set", "learning_rate=inf"], "learning_rate"),
    (["--max-time", "nan"], "--max-time"), (["--set", "eval_iters=1e12"], "eval_iters"),
    (["--set", "beta2=1"], "beta2"), (["--set", "dropout=-0.1"], "dropout")])
def test_bad_numbers_are_one_line_errors_before_training(dataset: Path, cli, args: list[str], word: str):
    line = one_line(cli("train", str(dataset), "--out", "x", *args))
    assert word in line
    assert not (Path(os.environ["GENCRAFT_HOME"]) / "runs" / "x").exists()


def test_divergence_without_a_checkpoint_says_none_is_kept(dataset: Path):
    from gencraft.train.loop import train

    with pytest.raises(TrainingDiverged, match="no checkpoint had been written yet"):
        train(dataset, out="d", progress=False,
              overrides=fast("learning_rate=10", "min_lr=10", "warmup_iters=0", "max_iters=50", "log_interval=1",
                             "grad_clip=0", "eval_interval=1000", "checkpoint_every=0"))


# ---------------------------------------------------------------- paths


def test_out_paths_of_the_wrong_kind_are_one_line_errors(run: Path, dataset: Path, cli, tmp_path: Path):
    folder = tmp_path / "a folder"
    folder.mkdir()
    assert "is a folder" in one_line(cli("generate", str(run), "--prompt", "the", "-m", "3", "--out", str(folder)))
    pixels = make_image_run(tmp_path, "pixels")
    assert "is a folder" in one_line(cli("imagine", str(pixels), "--out", str(folder)))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "is a file" in one_line(cli("train", str(dataset), "--out", str(a_file)))
    assert "is a file" in one_line(cli("generate", str(run), "--prompt", "the", "-m", "3",
                                       "--out", str(a_file / "out.txt")))


def test_symlink_loops_among_sources(tmp_path: Path, cli):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("\n".join(corpus(30)), encoding="utf-8")
    (src / "x.txt").symlink_to(src / "y.txt")
    (src / "y.txt").symlink_to(src / "x.txt")
    res = cli("data", "prepare", str(src), "--out", "looped", "--unit", "line")
    assert res.code == 0, res.err  # the loop is skipped (and listed), the rest is read
    manifest = json.loads((Path(os.environ["GENCRAFT_HOME"]) / "datasets/looped/manifest.json").read_text())
    assert {Path(s["path"]).name for s in manifest["skipped"]} == {"x.txt", "y.txt"}
    assert "cannot be resolved" in one_line(cli("data", "prepare", str(src / "x.txt"), "--out", "l2"))
    assert "not one of the sources" in one_line(cli("data", "prepare", str(src), "--out", "l3", "--unit", "line",
                                                    "--license", f"{tmp_path / 'elsewhere'}=MIT"))


# ---------------------------------------------------------------- files on disk


def test_a_wrong_value_in_gencraft_json_names_the_file_and_field(run: Path, cli):
    info = json.loads((run / "gencraft.json").read_text())
    info["model"]["n_embd"] = -5
    (run / "gencraft.json").write_text(json.dumps(info))
    line = one_line(cli("generate", str(run), "--prompt", "the", "-m", "3"))
    assert "gencraft.json: field model.n_embd=-5" in line
    (run / "gencraft.json").write_text(json.dumps({**info, "tokenizer": {"kind": "char", "vocab_size": "x", "eos_id": 0}}))
    assert "field tokenizer.vocab_size" in one_line(cli("generate", str(run), "--prompt", "the", "-m", "3"))
    (run / "gencraft.json").write_text("[1, 2]")
    assert "expected a JSON object" in one_line(cli("generate", str(run), "--prompt", "the"))


def test_weights_are_checked_against_the_recorded_digest(run: Path):
    from gencraft.backends import load

    load(str(run))  # intact: loads
    w = run / "model.safetensors"
    data = bytearray(w.read_bytes())
    for i in range(400):  # flip 400 bytes inside the tensors (the header stays valid JSON)
        data[-1 - 13 * i] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(RunError, match="model.safetensors: its sha256 differs from the model_digest"):
        load(str(run))


def test_token_files_are_checked_against_the_manifest(dataset: Path):
    from gencraft.train.loop import train

    (dataset / "train.bin").write_bytes((dataset / "train.bin").read_bytes()[:-20])
    with pytest.raises(DataError, match=r"train.bin: holds .* tokens but manifest.json records"):
        train(dataset, out="t", progress=False, overrides=fast("max_iters=2"))


def test_verify_a_manifest_that_is_a_list(tmp_path: Path, cli):
    (tmp_path / "x.txt").write_text("hello")
    (tmp_path / "x.txt.manifest.json").write_text("[1, 2]")
    res = cli("verify", str(tmp_path / "x.txt"))
    assert res.code == 1 and "tampered" in res.out and "Traceback" not in res.err


def test_hf_folders_with_only_pickle_weights_are_refused(tmp_path: Path):
    from gencraft.backends import load

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded, ever")
    with pytest.raises(RunError, match="pytorch_model.bin.*never loads pickle.*safe_serialization=True"):
        load(f"hf:{tmp_path}")


def test_training_from_an_hf_base_is_bounded_by_memory(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch):
    """An HF base is sized from its config.json like every family, before its weights are read."""
    transformers = pytest.importorskip("transformers")
    import torch

    from gencraft.data import prepare
    from gencraft.tokenize import train_tokenizer
    from gencraft.train.finetune import base_tokenizer

    tok = train_tokenizer("bpe", corpus(), vocab_size=300)
    cfg = transformers.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=2, vocab_size=tok.vocab_size,
                                  bos_token_id=tok.eos_id, eos_token_id=tok.eos_id)
    torch.manual_seed(0)
    hf = tmp_path / "hf"
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(hf)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok.hf, eos_token=tok.eos_token, bos_token=tok.eos_token,
                                         clean_up_tokenization_spaces=False).save_pretrained(hf)
    spec = f"hf:{hf}"
    (tmp_path / "c.txt").write_text("\n".join(corpus()), encoding="utf-8")
    ds = prepare([tmp_path / "c.txt"], tmp_path / "ds", license="CC0-1.0", unit="line", tokenizer_from=spec,
                 base_tokenizer=base_tokenizer(spec))
    runs = Path(os.environ["GENCRAFT_HOME"]) / "runs"
    args = ["train", str(ds), "--from", spec, "--out", "h", "--set", "block_size=32", "--set", "batch_size=64",
            "--set", "max_iters=2", "--set", "eval_iters=1", "--set", "num_threads=1"]
    monkeypatch.setenv("GENCRAFT_MEMORY_LIMIT", str(3 << 20))  # the batches' activations (~20 MB) do not fit
    line = one_line(cli(*args))
    assert "training a hf of 0.0M parameters" in line and "batch_size/block_size" in line, line
    assert not (runs / "h").exists()
    # a config.json promising a 100k-wide, 1000-layer model is refused from its shapes, before the
    # (tiny, mismatched) weights are read; a LoRA on it is counted with its base frozen
    huge = tmp_path / "huge"
    shutil.copytree(hf, huge)
    conf = json.loads((huge / "config.json").read_text())
    (huge / "config.json").write_text(json.dumps({**conf, "n_embd": 102400, "n_layer": 1000, "n_head": 100}))
    monkeypatch.delenv("GENCRAFT_MEMORY_LIMIT")
    for extra, says in (([], "--lora"), (["--lora"], "a smaller base model")):
        line = one_line(cli("train", str(ds), "--from", f"hf:{huge}", "--out", "h", *extra, "--set", "block_size=32"))
        assert "parameters" in line and "memory" in line and says in line, line
        assert not (runs / "h").exists()
    assert cli(*args).code == 0 and (runs / "h" / "gencraft.json").is_file()  # with the memory it has: trains


def test_user_content_is_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from gencraft.library import Library
    from gencraft.paths import home

    monkeypatch.setenv("GENCRAFT_HOME", str(tmp_path / "new-home"))
    assert stat.S_IMODE(home().stat().st_mode) == 0o700
    lib = Library.open()
    lib.add(kind="text", model="m", prompt="a private prompt", text="a private output")
    assert stat.S_IMODE((home() / "library.db").stat().st_mode) == 0o600


# ---------------------------------------------------------------- sizes and depth


def test_sizes_are_bounded_before_work(tmp_path: Path, cli, gencraft_home: Path):
    run = make_image_run(gencraft_home, "px")
    line = one_line(cli("imagine", str(run), "--upscale", "50000", "--out", str(tmp_path / "o.png")))
    assert "--upscale" in line and "memory" in line
    assert "--n" in one_line(cli("imagine", str(run), "--n", "0", "--out", str(tmp_path / "o.png")))


def test_deep_schemas_are_one_line_errors(tmp_path: Path, cli, gencraft_home: Path):
    make_text_run(gencraft_home, "tiny")
    deep: dict = {"type": "string"}
    for _ in range(300):
        deep = {"type": "object", "properties": {"a": deep}}
    (tmp_path / "deep.json").write_text(json.dumps(deep))
    assert "nested more than" in one_line(cli("game", "npc", "tiny", "--schema", str(tmp_path / "deep.json")))


# ---------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    from gencraft.server import ServerConfig

    home = tmp_path_factory.mktemp("robust-server")
    make_text_run(home, "tiny", block_size=256)
    broken = make_text_run(home, "broken")
    info = json.loads((broken / "gencraft.json").read_text())
    info["model"]["n_head"] = -1
    (broken / "gencraft.json").write_text(json.dumps(info))
    (home / "runs" / "notjson").mkdir()
    (home / "runs" / "notjson" / "gencraft.json").write_text("[")
    with LiveServer(ServerConfig(auth=False, home=home, rate_per_minute=0)) as s:
        yield s


def test_server_answers_4xx_for_broken_runs_and_keeps_the_connection(server: LiveServer):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for model, field in (("broken", "model.n_head"), ("notjson", "not valid JSON")):
            r = c.post("/v1/completions", json={"model": model, "prompt": "a", "max_tokens": 2})
            assert r.status_code == 400 and field in r.json()["error"]["message"], r.text
        r = c.post("/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 2})
        assert r.status_code == 200
        assert c.get("/v1/gencraft/runs").status_code == 200  # the listing shows broken runs too
        r = c.get("/v1/gencraft/runs/notjson")
        assert r.status_code == 400 and "gencraft.json" in r.json()["error"]["message"], r.text


def test_server_rejects_what_it_cannot_honour(server: LiveServer):
    deep: dict = {"type": "string"}
    for _ in range(300):
        deep = {"type": "object", "properties": {"a": deep}}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/v1/gencraft/game/npc", json={"model": "tiny", "schema": deep})
        assert r.status_code == 400 and "nested more than" in r.json()["error"]["message"], r.text
        for body, param in (({"stop": ""}, "stop"), ({"stop": ["a", ""]}, "stop"), ({"best_of": 0}, "best_of"),
                            ({"best_of": 1, "n": 2}, "best_of"), ({"best_of": 2, "stream": True}, "best_of")):
            r = c.post("/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 2, **body})
            assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
        r = c.post("/v1/completions", json={"model": "tiny", "prompt": "the", "max_tokens": 4, "best_of": 3,
                                            "n": 2, "seed": 1})
        assert r.status_code == 200 and [ch["index"] for ch in r.json()["choices"]] == [0, 1]


def test_library_rows_are_validated_on_load(cli, gencraft_home: Path):
    import sqlite3

    from gencraft.library import Library

    lib = Library.open()
    good = lib.add(kind="text", model="m", prompt="p", text="fine", parameters={"a": 1})
    bad = lib.add(kind="text", model="m", prompt="p", text="edited by hand")
    lib.close()
    with sqlite3.connect(gencraft_home / "library.db") as db:  # someone edits the database by hand
        db.execute("UPDATE items SET parameters = '[1, 2]', rating = 7 WHERE id = ?", (bad,))
    assert cli("library", "show", str(good)).code == 0
    line = one_line(cli("library", "show", str(bad)))
    assert f"library item {bad}: field" in line
    with sqlite3.connect(gencraft_home / "library.db") as db:
        db.execute("UPDATE items SET guard = '{not json' WHERE id = ?", (bad,))
    assert "JSON cannot be read" in one_line(cli("library", "list"))


def test_generation_sizes_are_bounded_by_memory(cli, gencraft_home: Path):
    run = make_text_run(gencraft_home, "tiny")
    line = one_line(cli("generate", str(run), "--prompt", "the", "-m", str(10**12)))
    assert "max_new_tokens" in line and "memory" in line
    line = one_line(cli("generate", str(run), "--prompt", "the", "-m", str(10**6), "--num-beams", str(10**6),
                        "--n", "2"))
    assert "memory" in line

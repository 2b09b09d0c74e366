"""Guard on a real (tiny) trained run: engine watermark, copy index of the run, memorization, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gencraft import guard


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A 1-layer char GPT trained for a few steps on 60k characters of tinyshakespeare."""
    from gencraft.data import prepare
    from gencraft.train.loop import train

    root = tmp_path_factory.mktemp("guard_run")
    src = root / "shakespeare.txt"
    src.write_text((shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    ds = prepare([src], root / "ds", license="public-domain", unit="paragraph")
    return train(ds, out=root / "run", seed=0, progress=False,
                 overrides=["max_iters=40", "n_layer=1", "n_embd=32", "n_head=2", "block_size=32",
                            "eval_interval=40", "eval_iters=2", "batch_size=8", "dtype=float32"])


@pytest.fixture(scope="module")
def shared_data() -> Path:  # module scope for the run fixture
    import os

    here = Path(__file__).resolve().parents[2] / "shared" / "data"
    SHARED_DATA = here if here.is_dir() else Path(os.environ.get("GENCRAFT_SHARED_DATA", "/work/shared/data"))
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.mark.parametrize("scheme", ["tournament", "green-list"])
def test_engine_watermark_detected_through_run_tokenizer(scheme: str, tiny_run: Path, tmp_path: Path, cli) -> None:
    from gencraft.backends import load
    from gencraft.guard.watermark import detect_with

    keys = guard.init_keys()
    tm = load(tiny_run)
    policy = guard.ReleasePolicy(store=False, watermark_scheme=scheme)
    wm = policy.text_watermark(tm.tokenizer.vocab_size)
    assert wm is not None and guard.ReleasePolicy(watermark=False).text_watermark(10) is None
    opts = dict(max_new_tokens=200, seed=1, stop_at_eos=False, top_k=20)
    marked = tm.generate("ROMEO:", **guard.watermark_options(wm, opts))
    plain = tm.generate("ROMEO:", **opts)
    block = {"scheme": scheme, **wm.params}
    assert detect_with(tm.tokenizer.encode(marked.text), tm.tokenizer.vocab_size, keys, block)["p_value"] < 1e-4
    assert detect_with(tm.tokenizer.encode(plain.text), tm.tokenizer.vocab_size, keys, block)["p_value"] > 1e-3

    out = guard.release(marked.text, model=tm, params={"seed": 1}, seed=1, watermark=wm, policy=policy,
                        out=tmp_path / "gen.txt").path
    assert json.loads((tmp_path / "gen.txt.manifest.json").read_text())["watermark"]["scheme"] == scheme
    res = cli("guard", "watermark", "detect", out, "--run", tiny_run, "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["p_value"] < 1e-4 and json.loads(res.out)["scheme"] == scheme
    (tmp_path / "plain.txt").write_text(plain.text, encoding="utf-8")
    assert cli("guard", "watermark", "detect", tmp_path / "plain.txt", "--run", tiny_run).code == 1
    assert cli("verify", out).code == 0


def test_run_copy_index_and_cli(tiny_run: Path, tmp_path: Path, cli) -> None:
    res = cli("guard", "index", tiny_run)
    assert res.code == 0, res.err
    idx = guard.load_run_index(tiny_run, build=False)
    assert idx.has_tokens and idx.meta["documents"] > 10
    info = json.loads((tiny_run / "gencraft.json").read_text())
    from gencraft.data import load_dataset

    docs = [d for d in load_dataset(info["data"]["dataset"]).documents("train") if len(d["text"]) > 200]
    planted = docs[0]["text"][:180]
    f = tmp_path / "out.txt"
    f.write_text("Something fresh, never seen. " + planted, encoding="utf-8")
    res = cli("guard", "copies", tiny_run, f, "--json")
    assert res.code == 1, res.err  # copy risk
    report = json.loads(res.out)
    assert report["copy_risk"] and report["longest_chars"] >= 180 and report["longest_tokens"] >= 50
    assert report["sources"][0]["doc_id"] == docs[0]["id"]
    assert report["sources"][0]["license"] == "public-domain"
    f.write_text("Zebras in quantum violins, nothing of the bard.", encoding="utf-8")
    assert cli("guard", "copies", tiny_run, f).code == 0


def test_memorization_benchmark_runs_through_engine(tiny_run: Path, cli) -> None:
    from gencraft.guard.memorization import extractability

    r = extractability(tiny_run, prompts=4, prefix_tokens=16, suffix_tokens=8, batch_size=4)
    assert r.prompts == 4 and 0.0 <= r.extractable_fraction <= 1.0
    assert 0.0 <= r.mean_matched_prefix <= 8
    res = cli("guard", "memorization", tiny_run, "--prompts", "2", "--prefix", "8", "--suffix", "4", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["prompts"] == 2


def test_generate_retries_on_copy_risk(tiny_run: Path, tmp_path: Path) -> None:
    import gencraft
    from gencraft.backends import load
    from gencraft.errors import GuardError
    from gencraft.guard.copies import CopyIndex, build_copy_index

    guard.init_keys()
    tm = load(tiny_run)
    opts = dict(max_new_tokens=150, top_k=20, stop_at_eos=False)
    policy = guard.ReleasePolicy(copy_action="block", store=False)
    marked = guard.watermark_options(policy.text_watermark(tm.tokenizer.vocab_size), opts)
    first = tm.generate("ROMEO:", seed=3, **marked).text
    # an index whose "training data" holds exactly what seed 3 produces: that attempt is a copy
    build_copy_index(tmp_path / "idx", [{"id": 0, "source": 0, "text": first}],
                     [{"path": "planted.txt", "license": "CC0-1.0"}])
    policy._copy_indexes[str(tm.path)] = CopyIndex(tmp_path / "idx")
    [rel] = gencraft.generate_text(tm, "ROMEO:", seed=3, retries=2, policy=policy, **opts)
    assert rel.manifest["parameters"]["attempt"] == 1 and rel.manifest["seed"] == 4
    assert not rel.report.copies.copy_risk and rel.text != first
    assert rel.manifest["watermark"]["key_id"] and rel.signed
    greedy = dict(opts, temperature=0, no_repeat_ngram_size=2)  # greedy alone is all spaces on this tiny run
    first_greedy = tm.generate("ROMEO:", **greedy).text
    assert len(first_greedy.split()) > 10
    build_copy_index(tmp_path / "idx2", [{"id": 0, "source": 0, "text": first_greedy}],
                     [{"path": "planted.txt", "license": "CC0-1.0"}])
    policy._copy_indexes[str(tm.path)] = CopyIndex(tmp_path / "idx2")
    with pytest.raises(GuardError, match="2 attempts"):  # greedy: every attempt is the same copy
        gencraft.generate_text(tm, "ROMEO:", retries=1, policy=policy, **greedy)


def test_tokens_the_training_data_never_holds_are_kept_away(tiny_run: Path, cli) -> None:
    from gencraft.backends import load

    tm = load(tiny_run)
    assert (tiny_run / "tokens_seen.npy").is_file()
    unseen = set(tm.unseen)
    assert len(unseen) >= 200 and tm.tokenizer.eos_id not in unseen  # the char tokenizer's byte fallback
    hot = dict(max_new_tokens=400, temperature=2.0, stop_at_eos=False, seed=0)
    assert not unseen & set(tm.generate("ROMEO:", **hot).token_ids)
    assert unseen & set(tm.generate("ROMEO:", allow_unseen_tokens=True, **hot).token_ids)
    res = cli("generate", tiny_run, "-p", "ROMEO:", "-m", "400", "-t", "2", "--seed", "0", "--json", "--no-store",
              "--allow-unseen-tokens")
    assert res.code == 0 and unseen & set(json.loads(res.out)["results"][0]["token_ids"])

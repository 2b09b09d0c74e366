"""Guard without a trained model: moderation, copy index, watermarks, keys, provenance, verify, C2PA."""

from __future__ import annotations

import io
import json
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from gencraft import guard
from gencraft.errors import GuardError, UsageError
from gencraft.guard.copies import CopyIndex, build_copy_index
from gencraft.guard.moderation import Policy, moderate, parse_lexicon
from gencraft.guard.provenance import read_c2pa, read_png_manifest
from gencraft.guard.watermark import TextWatermark, WatermarkProcessor, detect_ids, detect_image, embed_image

# --- moderation ----------------------------------------------------------------------------------

CASES = [
    # (category, positive text, negative text that shares letters/characters)
    ("profanity", "What the fuck is this?", "The fun duck is his."),
    ("profanity", "这个人真是个傻逼", "这个人真是个好人"),
    ("hate", "Those people are subhuman.", "Those people are human."),
    ("hate", "他们都是劣等民族", "他们都是优秀的民族"),
    ("sexual", "Click here for free porn tonight", "Click here for free popcorn tonight"),
    ("sexual", "网站上有色情内容", "网站上有彩色内容"),
    ("violence", "I will kill you tomorrow.", "I will call you tomorrow."),
    ("violence", "我要杀了你", "我要请你吃饭"),
    ("self_harm", "Sometimes I want to kill myself.", "Sometimes I want to treat myself."),
    ("self_harm", "我想自杀", "我想自学"),
    ("pii", "Write to jane.doe@example.org today", "Write to Jane Doe today"),
    ("pii", "我的手机号是13812345678", "我的房间号是1381"),
]


@pytest.mark.parametrize("category,positive,negative", CASES)
def test_each_category_positive_and_negative(category: str, positive: str, negative: str) -> None:
    hit = moderate(positive, Policy(classifier_threshold=None))
    assert category in hit.categories, (positive, hit.hits)
    spans = [h for h in hit.hits if h.category == category]
    assert all(positive[h.start:h.end] == h.text for h in spans)
    miss = moderate(negative, Policy(classifier_threshold=None))
    assert miss.categories == {}, (negative, miss.hits)


@pytest.mark.parametrize("text", [
    "f u c k off", "f.u.c.k off", "f-u-c-k off", "fuuuuck off", "ｆｕｃｋ off", "FUCK off", "5h1t happens",
    "sh!t happens", "what a b1tch",
])
def test_english_evasions_are_folded(text: str) -> None:
    r = moderate(text, Policy(classifier_threshold=None))
    assert r.categories.get("profanity") == 1.0, text
    assert r.action == "mask"
    assert "off" in r.masked_text or "happens" in r.masked_text or "what a" in r.masked_text
    assert r.masked_text != text


@pytest.mark.parametrize("text", ["他 媽 的", "他媽的", "他，妈，的", "殺了你", "自殺"])
def test_chinese_spacing_and_traditional_forms(text: str) -> None:
    r = moderate(text, Policy(classifier_threshold=None))
    assert r.categories, text


def test_no_scunthorpe_false_positives() -> None:
    text = "A classic assistant from Scunthorpe passed the cocktail to the therapist in Essex."
    assert moderate(text, Policy(classifier_threshold=None)).categories == {}


def test_actions_masking_and_block() -> None:
    text = "you shit, mail me at a.b@example.com"
    r = moderate(text)
    assert r.action == "mask"
    assert "shit" not in r.masked_text and "a.b@example.com" not in r.masked_text
    assert len(r.masked_text) == len(text)
    r = moderate(text, Policy(actions={"profanity": "block"}))
    assert r.blocked
    r = moderate(text, Policy(actions={"profanity": "allow", "pii": "flag"}))
    assert r.action == "flag" and r.masked_text == text
    with pytest.raises(UsageError, match="policy action"):
        Policy(actions={"profanity": "delete"})
    with pytest.raises(UsageError, match="category"):
        Policy(actions={"spam": "block"})


def test_user_lexicon_and_credit_cards() -> None:
    terms = parse_lexicon("violence  smash*\nprofanity 呆瓜\n")
    r = moderate("I'll s m a s h it, 你这个呆瓜", Policy(terms=terms, classifier_threshold=None))
    assert set(r.categories) == {"violence", "profanity"}
    with pytest.raises(UsageError, match="line 1"):
        parse_lexicon("justoneword\n")
    good = moderate("card 4111 1111 1111 1111", Policy(classifier_threshold=None))
    assert [h.rule for h in good.hits] == ["credit_card"]
    bad_luhn = moderate("card 4111 1111 1111 1112", Policy(classifier_threshold=None))
    assert "credit_card" not in [h.rule for h in bad_luhn.hits]


def test_classifier_flags_insults_the_lexicon_misses() -> None:
    if guard.moderation.classifier_name() is None:
        pytest.skip("alt-profanity-check not installed")
    r = moderate("you are a stupid worthless piece of crap, go to hell you moron")
    assert r.categories.get("profanity", 0) > 0.95 and r.action == "flag"
    assert moderate("What a lovely afternoon for a walk in the park.").categories == {}


def test_guard_check_cli(tmp_path, cli) -> None:
    f = tmp_path / "in.txt"
    f.write_text("hello f u c k world, call 415-555-0134", encoding="utf-8")
    res = cli("guard", "check", f, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert set(out["categories"]) == {"profanity", "pii"} and "415-555-0134" not in out["masked_text"]
    res = cli("guard", "check", f, "--action", "pii=block")
    assert res.code == 1 and "block" in res.out
    res = cli("guard", "check", tmp_path / "missing.txt")
    assert res.code == 2 and "not found" in res.err and "Traceback" not in res.err


# --- copy index ----------------------------------------------------------------------------------

DOCS = [
    "The quick brown fox jumps over the lazy dog while the farmer sleeps under the old oak tree.",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。这首诗写的是静夜里对故乡的思念，千百年来人人会背。",
    "In a hole in the ground there lived a small creature who loved tea, cake and quiet afternoons by the fire, "
    "and never went on adventures of any kind until a wizard knocked on the round green door one morning.",
]
SOURCES = [{"path": "fox.txt", "sha256": "a", "license": "CC-BY-4.0"},
           {"path": "poems.txt", "sha256": "b", "license": "public-domain"},
           {"path": "novel.txt", "sha256": "c", "license": "unknown"}]


@pytest.fixture
def copy_index(tmp_path) -> CopyIndex:
    docs = [{"id": 10 + i, "source": i, "text": t} for i, t in enumerate(DOCS)]
    build_copy_index(tmp_path / "idx", docs, SOURCES)
    return CopyIndex(tmp_path / "idx")


def test_planted_passage_found_with_its_source(copy_index: CopyIndex) -> None:
    planted = DOCS[2][20:150]
    text = "Totally new words come first here. " + planted + " And a brand new ending of mine."
    r = copy_index.check(text)
    assert r.copy_risk and r.longest_chars == len(planted)
    top = r.spans[0]
    assert text[top.start:top.end] == planted
    assert (top.doc_id, top.path, top.license) == (12, "novel.txt", "unknown")
    assert r.sources[0]["doc_id"] == 12
    assert 0.3 < r.char_ngram_fraction < 1.0


def test_chinese_copy_and_short_overlap_is_not_a_risk(copy_index: CopyIndex) -> None:
    r = copy_index.check("他说：床前明月光，疑是地上霜。举头望明月。")
    assert r.longest_chars == len("床前明月光，疑是地上霜。举头望明月")  # punctuation inside the span counts
    assert not r.copy_risk and r.spans[0].path == "poems.txt"
    clean = copy_index.check("An entirely original sentence about zebras, quantum flux and violins.")
    assert clean.longest_chars == 0 and clean.char_ngram_fraction == 0.0 and clean.spans == []


def test_reformatted_copies_are_found_and_mapped_back(tmp_path, shared_data) -> None:
    import zhconv

    from gencraft.guard.copies import fold

    lines = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[:40_000].split("\n")
    poems = json.loads((shared_data / "tang300.json").read_text(encoding="utf-8"))[:40]
    docs = ["\n".join(lines[i:i + 40]) for i in range(0, len(lines) - 40, 40)]
    docs += ["".join(p["paragraphs"]) for p in poems]  # traditional characters, as the anthology has them
    build_copy_index(tmp_path / "idx", [{"id": i, "source": 0, "text": t} for i, t in enumerate(docs)],
                     [{"path": "mixed", "license": "public-domain"}])
    idx = CopyIndex(tmp_path / "idx")
    verses = "\n".join(lines[200:231])  # the case: 31 lines of the training text
    joined = verses.replace("\n", " ")
    r = idx.check(joined)
    assert r.copy_risk and r.longest_chars >= len(joined) - 2, r.reason
    top = r.spans[0]
    assert joined[top.start:top.end] in joined and top.end - top.start == top.length  # the user's characters
    respaced = joined.replace(",", " ;").replace(".", "!").replace("'", "’").upper()
    assert idx.check(respaced).copy_risk
    full_width = joined.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)}).replace(" ", "\u3000")
    assert idx.check(full_width).copy_risk
    poem = "".join(poems[7]["paragraphs"]) + "".join(poems[8]["paragraphs"])
    simplified = zhconv.convert(poem, "zh-hans").replace("，", ", ").replace("。", ". ")
    assert simplified != poem and idx.check(simplified).copy_risk
    assert fold("ＡＢ，c d。後") == "abcd后"
    # stitched short copies: no long span, but most n-grams from the training data
    stitched = " ".join(lines[i][:30] for i in range(300, 400, 3) if len(lines[i]) > 24)
    s = idx.check(stitched, max_chars=10_000, max_tokens=10_000)
    assert s.copy_risk and "n-grams" in s.reason and s.longest_chars < 10_000
    fresh = idx.check("Zebras of quantum violins hum at noon; nothing here was ever in the plays, I swear.")
    assert not fresh.copy_risk


def test_matches_do_not_cross_documents(copy_index: CopyIndex) -> None:
    joined = DOCS[0][-40:] + DOCS[1][:40]
    r = copy_index.check(joined)
    assert r.longest_chars == 39  # "... old oak tree" (the closing period is formatting)
    assert all(s.end <= 40 or s.start >= 40 for s in r.spans if s.unit == "char")


# --- text watermark ------------------------------------------------------------------------------


def _bigram_model(text: str) -> tuple[list[str], torch.Tensor]:
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    counts = torch.ones(len(vocab), len(vocab))
    for a, b in zip(text, text[1:], strict=False):
        counts[index[a], index[b]] += 1
    return vocab, counts.log() - counts.sum(1, keepdim=True).log()


def _sample(logp: torch.Tensor, n: int, processor=None, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    ids = [1]
    for _ in range(n):
        logits = logp[ids[-1]].clone()[None]
        if processor is not None:
            logits = processor(torch.tensor([ids]), logits)
        ids.append(int(torch.multinomial(logits.softmax(-1), 1, generator=g)))
    return ids


def test_text_watermark_detected_only_when_applied(shared_data) -> None:
    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    vocab, logp = _bigram_model(text[:200_000])
    key = b"k" * 32
    proc = WatermarkProcessor(key, len(vocab))
    rule = proc.rule
    marked = _sample(logp, 200, proc)
    plain = _sample(logp, 200, None, seed=1)
    hit = detect_ids(marked, rule)
    assert hit.detected and hit.z > 4 and hit.p_value < 1e-4
    assert not detect_ids(plain, rule).detected
    index = {c: i for i, c in enumerate(vocab)}
    human = [index[c] for c in text[-20_000:-19_000] if c in index]
    assert not detect_ids(human, rule).detected
    assert not detect_ids(marked, TextWatermark(b"other key" * 4, len(vocab))).detected


def test_repeated_ngrams_are_scored_once() -> None:
    rule = TextWatermark(b"k" * 32, 50)
    green = next(t for t in range(50) if rule.is_green((7,), t))
    ids = [7, green] * 200
    d = detect_ids(ids, rule)
    assert d.scored == 2 and not d.detected


def test_processor_rows_depend_on_context_only() -> None:
    proc = WatermarkProcessor(b"k" * 32, 1000)
    ids = torch.tensor([[-1, -1, 5], [3, 4, 9]])
    out = proc(ids, torch.zeros(2, 1000))
    swapped = proc(ids[[1, 0]], torch.zeros(2, 1000))
    assert torch.equal(out[[1, 0]], swapped)
    assert abs(float((out[0] > 0).float().mean()) - 0.25) < 0.05
    assert set(out.unique().tolist()) == {0.0, 2.0}


# --- distortion-free text watermark (tournament sampling) ----------------------------------------


def _tournament_sample(logp: torch.Tensor, n: int, sampler, prompt: tuple[int, ...] = (1, 2, 3)) -> list[int]:
    """Sample ``n`` tokens of a bigram model through the sampling core's sampler protocol."""
    ids = list(prompt)
    for _ in range(n):
        probs = logp[ids[-1]].softmax(-1)[None]
        ids.append(int(type(sampler).sample([sampler], probs, torch.tensor([ids]), None)[0]))
    return ids[len(prompt):]


def test_tournament_is_distortion_free_for_every_token() -> None:
    from gencraft.guard.tournament import Tournament, reweight

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(40, 0.3))  # a peaked distribution, like a model's
    rule = Tournament(b"k" * 32, 40, layers=8)
    words = np.stack([rule.words((c,), np.arange(40)) for c in range(6000)])
    qs = reweight(np.broadcast_to(p, words.shape), words, 8)  # one distribution per key (context)
    assert np.allclose(qs.sum(1), 1.0)
    # averaged over keys (contexts) the winner's distribution is the model's, token by token
    assert np.abs(qs.mean(0) - p).max() < 4 * np.sqrt((qs.var(0) / len(qs)).max()) + 1e-9
    assert np.abs(qs - p).max() > 0.05  # while each context's distribution is moved


def test_tournament_watermark_detected_diverse_and_robust(shared_data) -> None:
    from gencraft.guard.tournament import TournamentWatermark, detect, scored_positions

    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    vocab, logp = _bigram_model(text[:60_000])
    wm = TournamentWatermark(b"k" * 32, len(vocab))
    a, b, a2 = (_tournament_sample(logp, 200, wm(seed)) for seed in (1, 2, 1))
    assert a == a2 and a != b  # the seed still decides the draw: n samples of a prompt differ
    hit = detect(a, wm.rule)
    assert hit.p_value < 1e-4 and hit.scored > 100, hit
    plain = _sample(logp, 200, None, seed=5)
    assert detect(plain, wm.rule).p_value > 1e-3
    assert detect(a, TournamentWatermark(b"other".ljust(32), len(vocab)).rule).p_value > 1e-3
    # 10% of the tokens changed at random: still detected
    rng = np.random.default_rng(0)
    edited = [int(rng.integers(len(vocab))) if rng.random() < 0.1 else t for t in a]
    assert detect(edited, wm.rule).p_value < 1e-4
    # a repeated context is scored once: a text that loops carries no extra evidence
    looped = a[:40] * 6
    assert len(scored_positions(looped, wm.rule.context_width)) <= len(scored_positions(a[:43], 3))


# --- image watermark -----------------------------------------------------------------------------


def _test_image() -> Image.Image:
    from sklearn.datasets import load_digits

    digits = load_digits().images[:16].reshape(4, 4, 8, 8).transpose(0, 2, 1, 3).reshape(32, 32) / 16.0
    base = np.kron(digits, np.ones((6, 6)))  # 192 x 192
    rgb = np.stack([base * 200 + 30, base * 120 + 60, 220 - base * 150], -1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, quality: int = 75) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf)


def test_image_watermark_survives_jpeg_and_resize() -> None:
    key = b"i" * 32
    img = _test_image()
    marked = embed_image(img, key)
    a, b = np.asarray(img, float), np.asarray(marked, float)
    assert 10 * np.log10(255**2 / ((a - b) ** 2).mean()) > 35  # invisible: PSNR above 35 dB
    assert detect_image(_jpeg(marked), key).bit_accuracy >= 0.9
    half = marked.resize((96, 96), Image.BICUBIC)
    assert detect_image(half, key).bit_accuracy >= 0.9
    assert detect_image(_jpeg(marked), key).detected
    assert not detect_image(_jpeg(img), key).detected
    assert not detect_image(_jpeg(marked), b"j" * 32).detected


def test_small_sprite_watermark_and_too_small_images() -> None:
    key = b"s" * 32
    sprite = _test_image().resize((64, 64), Image.BOX)
    marked = embed_image(sprite, key)
    assert detect_image(_jpeg(marked), key).detected
    assert detect_image(marked.resize((32, 32), Image.BICUBIC), key).detected
    assert not detect_image(_jpeg(sprite), key).detected
    with pytest.raises(ValueError, match="at least 32"):
        embed_image(sprite.resize((24, 24)), key)


# --- keys, provenance, verify, C2PA --------------------------------------------------------------


def test_keys_init_permissions(gencraft_home, cli) -> None:
    res = cli("keys", "init")
    assert res.code == 0, res.err
    folder = gencraft_home / "keys"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    keys = guard.load_keys(required=True)
    assert keys.key_id in res.out
    res = cli("keys", "init")
    assert res.code == 2 and "--force" in res.err


RUN_INFO = {"run_id": "abc123", "model_digest": "d" * 64, "kind": "gpt",
            "data": {"sources": [{"path": "a.txt", "sha256": "s", "license": "CC-BY-4.0"}]}}


def _release(content, **kw) -> guard.Released:
    """Release ``content`` of RUN_INFO's run, not stored in the library."""
    return guard.release(content, policy=kw.pop("policy", None) or guard.ReleasePolicy(store=False),
                         run_info=kw.pop("run_info", RUN_INFO), **kw)


def test_text_artifact_verify_valid_tampered_unsigned(tmp_path, cli) -> None:
    guard.init_keys()
    policy = guard.ReleasePolicy(store=False)
    out = tmp_path / "story.txt"
    rel = _release("A calm sea. Write to me: x.y@example.com", params={"temperature": 0.8}, seed=3,
                   watermark=policy.text_watermark(256), policy=policy, out=out)
    text, report, manifest = rel.text, rel.report, rel.manifest
    assert "x.y@example.com" not in text and report.action == "mask"
    assert manifest["watermark"]["key_id"] == guard.load_keys().key_id
    assert manifest["sources"][0]["license"] == "CC-BY-4.0" and manifest["seed"] == 3
    res = cli("verify", out)
    assert res.code == 0 and res.out.startswith("valid"), res.out + res.err

    out.write_text(text + " (edited)", encoding="utf-8")  # content changed
    res = cli("verify", out)
    assert res.code == 1 and "tampered" in res.out and "content" in res.out

    out.write_text(text, encoding="utf-8")
    side = tmp_path / "story.txt.manifest.json"
    m = json.loads(side.read_text())
    m["seed"] = 4  # manifest changed
    side.write_text(json.dumps(m))
    res = cli("verify", out)
    assert res.code == 1 and "tampered" in res.out and "manifest" in res.out

    side.unlink()
    res = cli("verify", out)
    assert res.code == 1 and "unsigned" in res.out


def test_markdown_front_matter(tmp_path) -> None:
    guard.init_keys()
    p = _release("# Title\n\nBody.\n", out=tmp_path / "a.md", front_matter=True).path
    assert not (tmp_path / "a.md.manifest.json").exists()
    assert p.read_text().startswith("---\ngencraft_manifest: ")
    assert guard.verify_file(p).status == "valid"
    p.write_text(p.read_text().replace("Body.", "Bodies."))
    assert guard.verify_file(p).status == "tampered"


def test_png_manifest_c2pa_and_tampering(tmp_path) -> None:
    guard.init_keys()
    rel = _release(_test_image(), kind="image", params={"steps": 10}, seed=1, out=tmp_path / "img.png")
    manifest, p = rel.manifest, rel.path
    assert manifest["watermark"]["scheme"] == "dct-spread-spectrum" and rel.data == p.read_bytes()
    v = guard.verify_file(p)
    assert v.status == "valid" and v.trusted

    store = read_c2pa(p.read_bytes())  # read back with c2pa-python's Reader
    active = store["manifests"][store["active_manifest"]]
    actions = [a for x in active["assertions"] if x["label"].startswith("c2pa.actions")
               for a in x["data"]["actions"]]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"].endswith("/trainedAlgorithmicMedia")
    assert active["signature_info"]["alg"] == "Ed25519"
    assert store["validation_state"] == "Trusted"  # our local CA is a trust anchor of the reader
    ours = next(x for x in active["assertions"] if x["label"] == "org.gencraft.provenance")
    assert ours["data"]["content_sha256"] == manifest["content_sha256"]

    # watermark survives the PNG round trip; a pixel edit is tampering
    loaded, m = read_png_manifest(p.read_bytes())
    assert m["signature"]["key_id"] == guard.load_keys().key_id
    assert detect_image(loaded, guard.watermark.derive_key(guard.load_keys().watermark_secret, "image")).detected
    arr = np.asarray(loaded).copy()
    arr[0, 0] = 255 - arr[0, 0]
    edited = Image.fromarray(arr)
    from gencraft.guard.provenance import png_bytes_with_manifest

    (tmp_path / "edited.png").write_bytes(png_bytes_with_manifest(edited, m))
    assert guard.verify_file(tmp_path / "edited.png").status == "tampered"
    buf = io.BytesIO()
    _test_image().save(buf, format="PNG")
    (tmp_path / "plain.png").write_bytes(buf.getvalue())
    assert guard.verify_file(tmp_path / "plain.png").status == "unsigned"


def test_watermark_detect_cli_on_image(tmp_path, cli) -> None:
    guard.init_keys()
    image = _release(_test_image(), kind="image").content
    _jpeg(image).save(tmp_path / "x.jpg", quality=75)
    res = cli("guard", "watermark", "detect", tmp_path / "x.jpg", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["bit_accuracy"] >= 0.9
    _jpeg(_test_image()).save(tmp_path / "y.jpg", quality=75)
    assert cli("guard", "watermark", "detect", tmp_path / "y.jpg").code == 1


def test_unsigned_without_keys_and_license_rule(tmp_path, caplog) -> None:
    policy = guard.ReleasePolicy(store=False)
    assert policy.keys is None and policy.text_watermark(256) is None
    with caplog.at_level("WARNING", logger="gencraft.guard"):
        rel = _release("plain words", out=tmp_path / "t.txt", policy=policy)
        _release("more words", policy=policy)
    assert not rel.signed and rel.manifest["watermark"] is None
    assert [r.getMessage() for r in caplog.records] == [guard.UNSIGNED_NOTICE]  # visible, once per policy
    assert guard.verify_file(tmp_path / "t.txt").status == "unsigned"
    info = {"run_id": "r-unknown-1", "data": {"sources": [{"path": "x.txt", "license": "unknown"}]}}
    with pytest.warns(UserWarning, match="unknown license"):
        assert guard.check_licenses(info) == ["x.txt"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per run: no second warning
        guard.check_licenses(info)
    with pytest.raises(GuardError, match="license unknown"):
        _release("words", run_info=info, policy=guard.ReleasePolicy(store=False, strict_licenses=True))


def test_block_raises_guard_error() -> None:
    with pytest.raises(GuardError, match="blocked"):
        _release("they are subhuman", policy=guard.ReleasePolicy(moderation=Policy(classifier_threshold=None),
                                                                 store=False))
    assert os.environ["GENCRAFT_HOME"]


# --- properties ----------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab fuck shit 他妈的 ｆｕ1@.5") + ["殺", "\u3000"]), max_size=40))
def test_moderation_spans_and_mask_keep_offsets(text: str) -> None:
    r = moderate(text, Policy(classifier_threshold=None))
    assert len(r.masked_text) == len(text)
    for h in r.hits:
        assert 0 <= h.start < h.end <= len(text) and text[h.start:h.end] == h.text


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2), st.integers(0, 60), st.integers(16, 60))
def test_any_copied_substring_is_found_exactly(tmp_path_factory, doc: int, start: int, length: int) -> None:
    folder = tmp_path_factory.mktemp("idx")
    build_copy_index(folder, [{"id": i, "source": i, "text": t} for i, t in enumerate(DOCS)], SOURCES)
    from gencraft.guard.copies import fold

    src = DOCS[doc]
    piece = src[start:start + length]
    if len(fold(piece)) < 12:
        return
    kept = [i for i, c in enumerate(piece) if fold(c)]  # the span runs from the first to the last kept character
    r = CopyIndex(folder).check("\x00" + piece + "\x01")
    assert r.longest_chars == kept[-1] - kept[0] + 1
    assert r.spans[0].path == SOURCES[doc]["path"]


def test_strided_index_still_finds_long_copies(tmp_path) -> None:
    docs = [{"id": i, "source": i, "text": t} for i, t in enumerate(DOCS)]
    build_copy_index(tmp_path / "full", docs, SOURCES)
    build_copy_index(tmp_path / "s4", docs, SOURCES, stride=4)
    full, strided = CopyIndex(tmp_path / "full"), CopyIndex(tmp_path / "s4")
    assert len(strided.char_keys) < len(full.char_keys) / 3
    from gencraft.guard.copies import fold

    for start in range(0, 12):
        end = next(e for e in range(start, len(DOCS[2])) if len(fold(DOCS[2][start:e])) == 12 + 4 - 1)
        piece = DOCS[2][start:end]  # n + stride - 1 folded characters: always found
        assert strided.check(piece).longest_chars == len(piece.strip(" ,."))


# --- the copy check on long inputs: streamed, with the findings of one pass ------------------------


@pytest.fixture(scope="module")
def long_index(tmp_path_factory):
    """Shakespeare (40-line documents) and Tang poems, indexed by character and by BPE token."""
    from conftest import SHARED_DATA

    from gencraft.tokenize import train_tokenizer

    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    lines = (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000].split("\n")
    poems = json.loads((SHARED_DATA / "tang300.json").read_text(encoding="utf-8"))[:30]
    docs = ["\n".join(lines[i:i + 40]) for i in range(0, len(lines) - 40, 40)] + ["".join(p["paragraphs"])
                                                                                 for p in poems]
    docs.append(docs[3][:500])  # a passage the corpus holds twice: equal matches, the first one wins
    tok = train_tokenizer("bpe", docs, vocab_size=400)
    folder = tmp_path_factory.mktemp("long") / "idx"
    build_copy_index(folder, [{"id": i, "source": 0, "text": t} for i, t in enumerate(docs)],
                     [{"path": "mixed", "license": "public-domain"}], tokens=tok.encode_documents(docs),
                     eos_id=tok.eos_id)
    return CopyIndex(folder, tok), docs


def _texts(docs: list[str], count: int, seed: int, longest: int) -> list[str]:
    """Outputs stitched from copied passages (up to ``longest`` characters) and made-up runs, some
    reformatted (upper case, lines joined)."""
    import random

    rng = random.Random(seed)
    full = "\n".join(docs)
    out = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 40)):
            if rng.random() < 0.5:
                a = rng.randrange(len(full))
                parts.append(full[a:a + rng.choice([rng.randint(1, 60), rng.randint(60, longest)])])
            else:
                parts.append("".join(rng.choice("abcdefg hijk,.的是") for _ in range(rng.randint(0, 80))))
        t = " ".join(parts)
        out.append(t.upper().replace("\n", " ") if rng.random() < 0.3 else t)
    return out


def _one_pass_reference(q: np.ndarray, corpus: np.ndarray, n: int, max_candidates: int = 32) -> np.ndarray:
    """The match lengths of the documented rule, computed naively: at a start no earlier match carries
    to, the longest verbatim match among the first ``max_candidates`` corpus positions holding its
    n-gram (a full index: stride 1); a match carries to the next start one shorter while >= n, and
    reaches back over the starts before it that it is longer at."""
    grams: dict[bytes, list[int]] = {}
    c = corpus.astype(np.int64)
    sep = int(np.iinfo(corpus.dtype).max)
    for p in range(len(c) - n + 1):
        if not (c[p:p + n] == sep).any():
            grams.setdefault(c[p:p + n].tobytes(), []).append(p)
    w = max(len(q) - n + 1, 0)
    out = np.zeros(w, dtype=np.int64)
    prev = 0
    for i in range(w):
        if prev - 1 >= n:
            out[i] = prev = prev - 1
            continue
        best, at = 0, -1
        for p in grams.get(q[i:i + n].tobytes(), [])[:max_candidates]:
            m = 0
            while i + m < len(q) and p + m < len(c) and q[i + m] == c[p + m]:
                m += 1
            if m > best:
                best, at = m, p
        out[i] = prev = best if best >= n else 0
        j = 1  # a match also reaches back over starts where a shorter one was carried
        while prev and i - j >= 0 and at - j >= 0 and q[i - j] == c[at - j]:
            out[i - j] = max(out[i - j], best + j)
            j += 1
    return out


def test_copy_check_streams_long_inputs_with_the_findings_of_one_pass(long_index) -> None:
    from gencraft.guard.copies import fold, match_blocks, match_statistics

    idx, docs = long_index
    n, sep = int(idx.meta["char_n"]), int(idx.meta["char_sep"])
    texts = _texts(docs, 16, seed=1, longest=400)
    for t in texts[:6]:  # one pass gives the rule's lengths; cut into blocks of any size, the same
        q = np.frombuffer(fold(t).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        q[q >= sep] = -1
        ref = _one_pass_reference(q, np.asarray(idx.chars), n)
        lengths, _ = match_statistics(q, idx.chars, idx.char_keys, n)
        assert np.array_equal(lengths, ref)
        cuts = sorted({0, len(q), *np.random.default_rng(len(q)).integers(0, len(q) + 1, 6).tolist()})
        blocks = [q[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
        streamed = [x for _, x, _ in match_blocks(blocks, idx.chars, idx.char_keys, n, window=500)]
        assert np.array_equal(np.concatenate(streamed) if streamed else np.zeros(0, np.int64), ref)
    risky = 0
    for t in texts:  # windows of a tenth of the text: spans across their edges are found, the same report
        whole = idx.check(t)
        assert idx.check(t, window=max(len(t) // 10, 500)) == whole, t[:60]
        risky += whole.copy_risk
    assert risky >= 4
    # a copy far longer than the window: measured a window at a time, its pieces joined into one span
    full = "\n".join(docs)
    for start, length in ((1000, 3000), (20_000, 9000)):  # whole documents (40 lines, > 1000 characters) in them
        t = "made up words " + full[start:start + length] + " more words of mine"
        whole = idx.check(t)
        for window in (13, 97, 1000):
            r = idx.check(t, window=window)
            assert r.spans[0] == whole.spans[0] and r.longest_chars == whole.longest_chars > 1000
            assert r.longest_tokens == whole.longest_tokens and r.copy_risk
            assert r.char_ngram_fraction == whole.char_ngram_fraction
            assert r.token_ngram_fraction == whole.token_ngram_fraction


def test_copy_check_memory_does_not_grow_with_the_input(long_index) -> None:
    import tracemalloc

    idx, docs = long_index
    base = "\n".join(docs)
    peaks = {}
    for size in (100_000, 1_000_000):
        text = ((base + " made up words of mine ") * (size // len(base) + 1))[:size]
        tracemalloc.start()
        r = idx.check(text, window=8192)
        peaks[size] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert r.copy_risk and r.longest_chars > 1000 and r.char_ngram_fraction > 0.9  # the corpus, copied
    assert peaks[1_000_000] < 1.5 * peaks[100_000], peaks  # ten times the input, about the same memory

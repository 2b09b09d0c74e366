"""The kits keep what they make in the content library, and `gencraft library` lists, searches,
shows, rates and deletes it (each test has its own GENCRAFT_HOME, so its own SQLite library)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_server import make_text_run

DUNGEON = "##########\n#S...#...#\n#.##.#.#.#\n#...#...G#\n##########\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random-weight char GPT run (the kits constrain it; nothing here needs it to be good)."""
    return str(make_text_run(tmp_path_factory.mktemp("kits"), "tiny"))


def listing(cli, *args: str) -> dict:
    r = cli("library", "list", "--json", *args)
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_write_is_stored_and_the_library_commands_work(cli, run: str, tmp_path: Path) -> None:
    r = cli("write", "continue", run, "--text", "the cat sat", "--tokens", "12", "--seed", "3")
    assert r.code == 0, r.err
    assert "stored in the library as #1" in r.err
    lib = listing(cli)
    assert lib["total"] == 1
    item = lib["data"][0]
    assert (item["kind"], item["model"], item["prompt"]) == ("write", run, "the cat sat")
    assert item["text"] == r.out.rstrip("\n") and item["text"].startswith("The cat sat")  # post-processed: capitalized
    assert item["parameters"]["tokens"] == 12 and item["parameters"]["seed"] == 3
    assert item["manifest"]["kind"] == "write" and item["manifest"]["content_sha256"]
    assert item["guard"] == item["manifest"]["guard"] and item["guard"]["moderation"]["action"]

    r = cli("write", "draft", run, "--title", "Harbour Night", "--sections", "2", "--section-tokens", "8",
            "--heading", "One", "--heading", "Two", "--out", tmp_path / "d.md")
    assert r.code == 0, r.err
    assert (tmp_path / "d.md").exists()
    # search: case-insensitive in prompt or text; filters combine
    r = cli("library", "search", "harbour NIGHT")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("#2\t") and "\twrite\t" in lines[0]
    assert listing(cli, "--kind", "write")["total"] == 2
    assert listing(cli, "--kind", "ads")["total"] == 0
    assert listing(cli, "--model", run)["total"] == 2
    assert listing(cli, "--since", "2000-01-01")["total"] == 2
    assert listing(cli, "--until", "2000-01-01T00:00:00+00:00")["total"] == 0
    assert [d["id"] for d in listing(cli, "-n", "1")["data"]] == [2]  # newest first

    r = cli("library", "show", "1")
    assert r.code == 0, r.err
    assert json.loads(r.out)["prompt"] == "the cat sat"
    r = cli("library", "rate", "1", "up", "--note", "nice rhythm")
    assert r.code == 0 and "+1" in r.out, r.err
    rated = listing(cli, "--rating", "up")
    assert [d["id"] for d in rated["data"]] == [1] and rated["data"][0]["note"] == "nice rhythm"
    assert cli("library", "rate", "1", "clear").code == 0
    assert listing(cli, "--rating", "up")["total"] == 0
    r = cli("library", "delete", "2")
    assert r.code == 0 and "deleted #2" in r.out
    assert listing(cli)["total"] == 1

    # one-line errors naming what was wrong
    for args, word in [(("show", "2"), "not found"), (("rate", "1", "sideways"), "rating"),
                       (("list", "--since", "yesterday"), "--since"), (("list", "--kind", "poem"), "--kind"),
                       (("show", "1", "--image", tmp_path / "x.png"), "without an image"),
                       (("delete", "99999999999999"), "not found")]:
        r = cli("library", *args)
        assert r.code == 2 and word in r.err and "Traceback" not in r.err, (args, r.err)
        assert len(r.err.strip().splitlines()) == 1, r.err


def test_no_store_keeps_the_library_empty(cli, run: str, gencraft_home: Path) -> None:
    r = cli("write", "continue", run, "--text", "a dog", "--tokens", "5", "--no-store")
    assert r.code == 0, r.err
    assert "stored" not in r.err
    assert cli("game", "names", run, "-n", "1", "--no-store").code == 0
    assert cli("ads", run, "--product", "Zed", "-n", "1", "--no-store").code == 0
    assert listing(cli)["total"] == 0


def test_game_records_and_maps_are_stored_with_validation(cli, run: str, tmp_path: Path) -> None:
    r = cli("game", "npc", run, "-n", "2", "--seed", "1")
    assert r.code == 0, r.err
    records = json.loads(r.out)
    lib = listing(cli, "--kind", "game")
    assert lib["total"] == 2
    stored = sorted(lib["data"], key=lambda d: d["parameters"]["index"])
    assert [json.loads(d["text"]) for d in stored] == records
    for i, d in enumerate(stored):
        assert d["prompt"] == "npc" and d["model"] == run and d["parameters"]["index"] == i
        assert d["guard"]["validation"]["valid"] is True and d["guard"]["moderation"]["action"]
        assert d["manifest"]["kind"] == "game.npc" and d["manifest"]["parameters"]["kind"] == "npc"

    (tmp_path / "d.txt").write_text(DUNGEON)
    r = cli("game", "map", "-e", tmp_path / "d.txt", "-n", "1", "--seed", "2")
    assert r.code == 0, r.err
    maps = [d for d in listing(cli, "--kind", "game")["data"] if d["parameters"]["kind"] == "map"]
    assert len(maps) == 1 and maps[0]["text"] == r.out
    assert maps[0]["guard"]["validation"]["playable"] is True


def test_ads_variants_are_stored_in_rank_order(cli, run: str) -> None:
    r = cli("ads", run, "--product", "Zed", "-n", "2", "--seed", "5")
    assert r.code == 0, r.err
    variants = json.loads(r.out)
    lib = listing(cli, "--kind", "ads")
    assert lib["total"] == 2
    stored = sorted(lib["data"], key=lambda d: d["parameters"]["rank"])
    assert [d["text"] for d in stored] == [f"{v['headline']} {v['description']} {v['cta']}" for v in variants]
    for d in stored:
        assert d["prompt"] == "Zed" and d["parameters"]["channel"] == "search"
        v = d["guard"]["validation"]
        assert v["valid"] is True and v["required"] == ["Zed"] and v["headline"].endswith("/30")
        assert d["manifest"]["kind"] == "ads"
    # what the person rates up is what the kit ranks toward next time: the same run again puts the
    # liked variant (second before) first
    r = cli("library", "rate", str(stored[1]["id"]), "up")
    assert r.code == 0, r.err
    r = cli("ads", run, "--product", "Zed", "-n", "2", "--seed", "5", "--no-store")
    assert r.code == 0 and "ranked toward the ads you rated" in r.err, r.err
    again = json.loads(r.out)
    assert [v["headline"] for v in again] == [variants[1]["headline"], variants[0]["headline"]]
    assert again[0]["scores"]["preference"] > again[1]["scores"]["preference"]
    r = cli("ads", run, "--product", "Zed", "-n", "2", "--seed", "5", "--no-store", "--no-rank-by-ratings")
    assert r.code == 0 and json.loads(r.out) == variants


def test_a_broken_library_never_breaks_the_command(cli, run: str, monkeypatch: pytest.MonkeyPatch,
                                                    gencraft_home: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("GENCRAFT_DB", "nosuchdb://x")
    out = tmp_path / "story.txt"
    r = cli("write", "continue", run, "--text", "the mat", "--tokens", "5", "--out", out)
    assert r.code == 0, r.err
    assert out.exists() and out.read_text().startswith("The mat")
    warnings = [line for line in r.err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: unsigned: no keys (run `gencraft keys init`)", warnings[1]]  # one line each
    assert "not stored in the library" in warnings[1] and "--no-store" in warnings[1]
    assert "Traceback" not in r.err
    r = cli("game", "names", run, "-n", "1")
    assert r.code == 0 and json.loads(r.out) and "not stored in the library" in r.err
    # the library itself (a SQLite file that is not a database) says so in one line too
    monkeypatch.delenv("GENCRAFT_DB")
    (gencraft_home / "library.db").write_bytes(b"this is not a database" * 100)
    r = cli("write", "continue", run, "--text", "x", "--tokens", "3")
    assert r.code == 0 and "not stored in the library" in r.err and "Traceback" not in r.err
    r = cli("library", "list")
    assert r.code == 2 and "library" in r.err and "Traceback" not in r.err, r.err

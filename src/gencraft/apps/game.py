"""Game content kit: typed records (names, NPCs, quests, items, dialogue trees) from any text model.

Each record kind has a JSON Schema in ``gencraft/apps/schemas/KIND.json``; pass your own schema
to replace it. Records are generated under that schema as a constraint
(:mod:`gencraft.generate.constraints`), so every one parses and validates; dialogue trees are also
checked as graphs (:func:`check_dialogue`) -- every choice leads to an existing node and an end
node is reachable from the start -- and repaired when the model's choices leave no way out.
One ``seed`` reproduces a whole batch. Tile maps live in :mod:`gencraft.apps.maps`, sprites in
:func:`sprites`.

    >>> from gencraft.apps import game
    >>> recs = game.generate("my-run", "npc", n=5, seed=1)
    >>> game.export_records(recs, "npcs.csv")
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gencraft.apps._common import export, load_model, read_json_file
from gencraft.errors import DataError, GencraftError, UsageError
from gencraft.generate import constraints as C
from gencraft.generate.image import label_index, load_image_run, sample_images
from gencraft.guard import release, watermark_options

KINDS = ("names", "npc", "quest", "item", "dialogue")

_PROMPTS = {
    "names": "A list of names for characters in a fantasy game, as JSON:\n",
    "npc": "A character sheet for a non-player character in a fantasy role-playing game, as JSON:\n",
    "quest": "A quest for a fantasy role-playing game, as JSON:\n",
    "item": "An item found in a fantasy role-playing game, as JSON:\n",
    "dialogue": "A branching conversation in a fantasy role-playing game, as JSON:\n",
}

__all__ = ["KINDS", "Record", "check_dialogue", "export_records", "generate", "load_schema", "release_records",
           "sprites"]


def load_schema(kind: str, schema: str | os.PathLike[str] | dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema for ``kind``: the user's (a dict or a JSON file) or the built-in one."""
    if schema is not None:
        s = schema if isinstance(schema, dict) else read_json_file(schema, "schema")
        if not isinstance(s, dict) or s.get("type") not in ("object", "array"):
            raise UsageError(f"schema for {kind}: the top level must be a JSON object schema with "
                             '"type": "object" (or "array")', param="schema")
        return s
    if kind not in KINDS:
        raise UsageError(f"record kind {kind!r} is not one of {', '.join(KINDS)}", param="kind")
    text = resources.files("gencraft.apps").joinpath("schemas", f"{kind}.json").read_text(encoding="utf-8")
    return json.loads(text)


@dataclass
class Record:
    """One generated record: its value, the seed that made it and what the checks found."""

    kind: str
    value: dict[str, Any]
    seed: int
    logprob: float = 0.0
    notes: list[str] = field(default_factory=list)
    validation: dict[str, Any] | None = None  # what release_records stored beside it (schema check)

    def to_dict(self) -> dict[str, Any]:
        return self.value


# ---------------------------------------------------------------- dialogue graphs


def check_dialogue(tree: dict[str, Any]) -> list[str]:
    """Problems with a dialogue tree as a graph ([] when it is sound).

    Node ids must be unique, ``start`` and every choice's ``next`` must name a node, and some
    path from ``start`` must reach an end node (``end: true``, or a node without choices).
    """
    nodes = tree.get("nodes") or []
    ids = [n.get("id") for n in nodes]
    problems = []
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        problems.append(f"duplicate node ids: {', '.join(map(str, dup))}")
    by_id = {n.get("id"): n for n in nodes}
    if tree.get("start") not in by_id:
        problems.append(f"start {tree.get('start')!r} is not a node")
    for n in nodes:
        for c in n.get("choices") or []:
            if c.get("next") not in by_id:
                problems.append(f"node {n.get('id')}: choice leads to missing node {c.get('next')!r}")
    if tree.get("start") in by_id and not _end_reachable(tree):
        problems.append("no end node is reachable from start")
    return problems


def _is_end(node: dict[str, Any]) -> bool:
    return bool(node.get("end")) or not node.get("choices")


def _reachable(tree: dict[str, Any]) -> list[str]:
    by_id = {n["id"]: n for n in tree["nodes"]}
    seen, order, todo = {tree["start"]}, [tree["start"]], deque([tree["start"]])
    while todo:
        for c in by_id[todo.popleft()].get("choices") or []:
            nxt = c.get("next")
            if nxt in by_id and nxt not in seen:
                seen.add(nxt)
                order.append(nxt)
                todo.append(nxt)
    return order


def _end_reachable(tree: dict[str, Any]) -> bool:
    by_id = {n["id"]: n for n in tree["nodes"]}
    return any(_is_end(by_id[i]) for i in _reachable(tree))


def _dialogue_schema(base: dict[str, Any], n_nodes: int) -> dict[str, Any]:
    """The built-in dialogue schema pinned to ``n_nodes`` nodes with ids n1..nK, so that every
    ``start`` and ``next`` the mask allows names an existing node."""
    ids = [f"n{i + 1}" for i in range(n_nodes)]
    node = json.loads(json.dumps(base["properties"]["nodes"]["items"]))
    node["properties"]["choices"]["items"]["properties"]["next"] = {"enum": ids}
    items = []
    for i in ids:
        n = json.loads(json.dumps(node))
        n["properties"]["id"] = {"const": i}
        items.append(n)
    s = json.loads(json.dumps(base))
    s["properties"]["start"] = {"const": ids[0]}
    s["properties"]["nodes"] = {"type": "array", "prefixItems": items, "items": False,
                                "minItems": n_nodes, "maxItems": n_nodes}
    return s


def _repair_dialogue(tree: dict[str, Any]) -> str | None:
    """Make an end reachable by pointing the last choice of the deepest reachable node at an
    end node (or by ending that node); returns what was changed."""
    by_id = {n["id"]: n for n in tree["nodes"]}
    reach = _reachable(tree)
    ends = [n["id"] for n in tree["nodes"] if _is_end(n)]
    last = by_id[reach[-1]]
    if ends:
        if last.get("choices"):
            last["choices"][-1]["next"] = ends[0]
        else:
            last["end"] = True
        return f"node {last['id']}: last choice now leads to end node {ends[0]}"
    last["end"] = True
    return f"node {last['id']}: marked as an end node"


# ---------------------------------------------------------------- records


def generate(model: Any, kind: str, *, n: int = 1, seed: int = 0, schema: Any = None,
             prompt: str | None = None, temperature: float = 1.0, top_p: float = 1.0,
             nodes: int = 4, max_string: int = C.DEFAULT_MAX_STRING, watermark: Any = None,
             first_index: int = 0) -> list[Record]:
    """``n`` records of ``kind`` from ``model`` (a TextModel, run name/path or ``hf:PATH``).

    Every record validates against the schema (the built-in one, or ``schema``: a dict or a JSON
    file); dialogue trees are graph-checked and repaired (see :func:`check_dialogue`). The same
    ``seed`` gives the same batch. ``watermark``: the text watermark to sample with
    (:meth:`gencraft.guard.ReleasePolicy.text_watermark`; None: unmarked). ``first_index``: the index of
    the first record in a batch made in parts: records ``first_index..`` of one ``n``-record call.
    """
    if n < 1:
        raise UsageError(f"n={n}: must be at least 1", param="n")
    if kind == "dialogue" and not 2 <= nodes <= 8:
        raise UsageError(f"nodes={nodes}: a dialogue has 2 to 8 nodes", param="nodes")
    tm = load_model(model)
    user_schema = load_schema(kind, schema)
    gen_schema = user_schema
    if kind == "dialogue" and schema is None:
        gen_schema = _dialogue_schema(user_schema, nodes)
    grammar = C.json_schema(gen_schema, max_string=max_string)
    text_prompt = prompt if prompt is not None else _PROMPTS.get(kind, f"A {kind} record, as JSON:\n")
    if kind == "names" and prompt is None:
        text_prompt = _names_prompt(seed) or text_prompt
    outs = C.generate_many(tm, text_prompt, grammar, n=n, seed=seed, temperature=temperature, top_p=top_p,
                           first_index=first_index, **watermark_options(watermark))
    records = []
    for i, o in enumerate(outs):
        value = o.value
        C.validate_json(value, user_schema, where=f"{kind} record {i}")
        rec = Record(kind, value, seed, o.logprob)
        if kind == "dialogue" and {"start", "nodes"} <= set(value):
            problems = check_dialogue(value)
            if problems and all("reachable" in p for p in problems):
                rec.notes.append("repaired: " + str(_repair_dialogue(value)))
                problems = check_dialogue(value)
            if problems:
                raise DataError(f"dialogue record {i} is not a sound graph: {problems[0]}; "
                                "use the built-in schema or another seed", param="schema")
        records.append(rec)
    return records


def _names_prompt(seed: int, k: int = 8) -> str | None:
    """A few names from the shipped list (``assets/corpus/names.txt``) as examples of the style."""
    import random

    try:
        names = resources.files("gencraft").joinpath("assets", "corpus", "names.txt").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return None
    pool = [n.strip() for n in names.splitlines() if n.strip()]
    if not pool:
        return None
    shown = random.Random(seed).sample(pool, min(k, len(pool)))
    return _PROMPTS["names"] + json.dumps({"names": shown}) + "\n"


def export_records(records: list[Record], path: str | os.PathLike[str], *, model: Any = None,
                   parameters: dict[str, Any] | None = None, policy: Any = None, watermark: Any = None) -> Path:
    """Write records as JSON or CSV (by the suffix), released (:func:`gencraft.guard.release`: guard
    check and provenance manifest ``PATH.manifest.json``); dialogue CSV has one row per node.
    ``watermark``: the one the records were sampled with."""
    rows: list[dict[str, Any]] = []
    for r in records:
        if r.kind == "dialogue" and str(path).lower().endswith(".csv"):
            for node in r.value.get("nodes", []):
                rows.append({"title": r.value.get("title"), "start": r.value.get("start"), "node": node.get("id"),
                             "speaker": node.get("speaker"), "text": node.get("text"), "end": node.get("end"),
                             "choices": [f"{c.get('text')} -> {c.get('next')}" for c in node.get("choices", [])]})
        else:
            rows.append(r.value)
    kind = records[0].kind if records else "record"
    seed = records[0].seed if records else None
    return export(rows, path, model=model, kind=f"game.{kind}", parameters={"n": len(records), **(parameters or {})},
                  seed=seed, policy=policy, watermark=watermark)


def release_records(records: list[Record], *, policy: Any, model: Any = None, model_name: str | None = None,
                    schema: Any = None, prompt: str | None = None, parameters: dict[str, Any] | None = None,
                    watermark: Any = None, api_key: str | None = None, first_index: int = 0) -> list[Any]:
    """Release each record on its own (:func:`gencraft.guard.release` under ``policy``, label
    ``game.KIND``): the record as JSON text, stored in the library with its schema validation beside
    the guard's verdict (also left on ``record.validation``). What the ``game`` commands, the server's
    game route and the ``kits.game`` job do; returns the :class:`~gencraft.guard.Released` outputs.
    ``first_index``: the index (in the parameters) of the first record, for a batch made in parts."""
    released = []
    for i, r in enumerate(records, first_index):
        sch = load_schema(r.kind, schema)
        try:
            C.validate_json(r.value, sch, where=f"record {i}")
            r.validation = {"valid": True, "schema": sch.get("title", r.kind), "notes": r.notes}
        except GencraftError as e:
            r.validation = {"valid": False, "schema": sch.get("title", r.kind), "notes": [*r.notes, str(e)]}
        params = {**(parameters or {}), "schema": "custom" if isinstance(schema, dict) else str(schema or "built-in"),
                  "prompt": prompt, "seed": r.seed, "index": i, "kind": r.kind}
        released.append(release(json.dumps(r.value, ensure_ascii=False), kind="text", label=f"game.{r.kind}",
                                policy=policy, model=model, model_name=model_name, params=params, seed=r.seed,
                                prompt=prompt or r.kind, watermark=watermark, checks={"validation": r.validation},
                                api_key=api_key))
    return released


# ---------------------------------------------------------------- sprites


def sprites(image_run: Any, *, n: int = 8, seed: int = 0, size: int = 32, palette: Any = 16,
            label: str | int | None = None) -> list[Any]:
    """``n`` sprites sampled from an image run, resized to ``size`` x ``size`` and reduced to the
    game's palette: a number of colours, or a list of ``"#rrggbb"``/RGB colours. Returns PIL images."""
    import numpy as np
    from PIL import Image

    if not 4 <= size <= 512:
        raise UsageError(f"size={size}: sprites are 4 to 512 pixels wide", param="size")
    run = load_image_run(image_run)
    imgs = sample_images(run, n=n, seed=seed, label=label_index(run, label))
    out = []
    pal_img = _palette_image(palette)
    for arr in np.asarray(imgs):
        arr = np.asarray(arr, dtype=np.uint8)  # [H, W, C]
        im = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).convert("RGB")
        im = im.resize((size, size), Image.Resampling.LANCZOS)
        if pal_img is None:
            im = im.quantize(colors=int(palette), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        else:
            im = im.quantize(palette=pal_img, dither=Image.Dither.NONE)
        out.append(im.convert("RGB"))
    return out


def _palette_image(palette: Any) -> Any:
    """``None`` for a colour count, else a P-mode image carrying the given colours."""
    from PIL import Image

    if isinstance(palette, int) or (isinstance(palette, str) and palette.isdigit()):
        k = int(palette)
        if not 2 <= k <= 256:
            raise UsageError(f"palette={k}: a palette has 2 to 256 colours", param="palette")
        return None
    colours = palette.split(",") if isinstance(palette, str) else list(palette)
    rgb: list[int] = []
    for c in colours:
        if isinstance(c, str):
            c = c.strip().lstrip("#")
            if len(c) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in c):
                raise UsageError(f"palette colour {c!r}: use #rrggbb", param="palette")
            rgb += [int(c[i:i + 2], 16) for i in (0, 2, 4)]
        else:
            rgb += [int(x) for x in c][:3]
    if not rgb:
        raise UsageError("palette: give at least one colour", param="palette")
    n_col = len(rgb) // 3
    pal = Image.new("P", (1, 1))
    pal.putpalette(rgb + rgb[:3] * (256 - n_col))
    return pal

"""Writing assistant: continue a draft, or draft a piece from a title (outline first, then sections).

The context a model sees is assembled the way KoboldAI-style story tools do it:

* **memory** -- facts the model must keep, always at the top of the context;
* **world info / lorebook** -- entries inserted after the memory when one of their keywords
  appears in the recent text (case-insensitive; whole words for Latin script, substrings for CJK);
* **author's note** -- a style/tone instruction inserted a few lines before the end, where it
  steers the next words most;
* the most recent text fills what is left of the context budget.

Every generated piece goes through :func:`gencraft.post.text.clean` (spacing and punctuation for
English or Chinese, repeated sentences dropped, the last unfinished sentence trimmed). A draft's
outline is generated under a JSON Schema constraint (a list of section headings), so it always
parses, and each section gets its own token budget.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gencraft.apps._common import load_model, read_json_file
from gencraft.errors import UsageError
from gencraft.generate import constraints as C
from gencraft.guard import release, watermark_options
from gencraft.post import text as post

KINDS = {
    "news": "a news item",
    "report": "a report",
    "blog": "a blog post",
    "story": "a short story",
}
_KINDS_ZH = {"news": "新闻", "report": "报告", "blog": "博客文章", "story": "短篇故事"}


@dataclass
class LoreEntry:
    """A world-info entry: its ``content`` is inserted when any of ``keys`` appears."""

    keys: list[str]
    content: str


@dataclass
class Context:
    """What surrounds the text: memory, author's note (and how many lines from the end), lorebook."""

    memory: str = ""
    note: str = ""
    note_depth: int = 3
    lore: list[LoreEntry] = field(default_factory=list)
    scan_chars: int = 1000  # how far back keywords are looked for

    @staticmethod
    def load_lore(path: str) -> list[LoreEntry]:
        """A lorebook file: ``[{"keys": [...], "content": "..."}]`` (or ``{"entries": [...]}``)."""
        data = read_json_file(path, "world")
        entries = data.get("entries", data) if isinstance(data, dict) else data
        out = []
        if not isinstance(entries, list):
            raise UsageError(f"world file {path}: expected a list of {{keys, content}} entries", param="world")
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or not isinstance(e.get("content"), str):
                raise UsageError(f"world file {path}: entry {i} needs \"keys\" (list) and \"content\" (text)",
                                 param="world")
            keys = e.get("keys") or e.get("key") or []
            keys = [keys] if isinstance(keys, str) else list(keys)
            if not keys or not all(isinstance(k, str) and k for k in keys):
                raise UsageError(f"world file {path}: entry {i} has no keys", param="world")
            out.append(LoreEntry(keys, e["content"]))
        return out


def _mentions(text: str, key: str) -> bool:
    if any(post.is_cjk(c) for c in key):
        return key in text
    return re.search(rf"(?<!\w){re.escape(key)}(?!\w)", text, flags=re.IGNORECASE) is not None


def active_lore(text: str, ctx: Context) -> list[LoreEntry]:
    """The lorebook entries whose keywords appear in the last ``scan_chars`` of ``text``."""
    recent = text[-ctx.scan_chars:]
    return [e for e in ctx.lore if any(_mentions(recent, k) for k in e.keys)]


def build_prompt(text: str, ctx: Context, *, max_chars: int = 2000) -> str:
    """Memory + triggered world info + recent text with the author's note near the end."""
    head = []
    if ctx.memory.strip():
        head.append(ctx.memory.strip())
    head += [e.content.strip() for e in active_lore(text, ctx)]
    top = "\n".join(head)
    note = f"[Author's note: {ctx.note.strip()}]" if ctx.note.strip() else ""
    room = max(200, max_chars - len(top) - len(note) - 2)
    body = text[-room:]
    if len(text) > room:  # start at a line or sentence boundary, not mid-word
        cut = max(body.find("\n"), body.find(". ") + 1, 0)
        body = body[cut:].lstrip()
    if note:
        lines = body.split("\n")
        at = max(0, len(lines) - ctx.note_depth)
        lines.insert(at, note)
        body = "\n".join(lines)
    return (top + "\n\n" + body) if top else body


def _generate_text(tm: Any, prompt: str, *, tokens: int, seed: int, temperature: float, top_p: float,
                   repetition_penalty: float, watermark: Any) -> str:
    res = tm.generate(prompt, max_new_tokens=int(tokens), seed=int(seed), temperature=temperature,
                      top_p=top_p, repetition_penalty=repetition_penalty, **watermark_options(watermark))
    return res.text


@dataclass
class Written:
    """A generated piece: the text (Markdown or plain) and the parameters that made it."""

    text: str
    parameters: dict[str, Any]
    outline: list[str] = field(default_factory=list)
    spelling: list[post.Suggestion] = field(default_factory=list)


def continue_text(model: Any, draft: str, *, tokens: int = 200, ctx: Context | None = None, seed: int = 0,
                  temperature: float = 0.8, top_p: float = 0.95, repetition_penalty: float = 1.1,
                  lang: str | None = None, spell: bool = False, watermark: Any = None) -> Written:
    """Continue ``draft``: returns the draft plus its cleaned continuation. ``watermark``: the text
    watermark to sample with (:meth:`gencraft.guard.ReleasePolicy.text_watermark`; None: unmarked)."""
    if tokens < 1:
        raise UsageError(f"tokens={tokens}: must be at least 1", param="tokens")
    tm = load_model(model)
    ctx = ctx or Context()
    lang = lang or post.detect_language(draft)
    prompt = build_prompt(draft, ctx)
    raw = _generate_text(tm, prompt, tokens=tokens, seed=seed, temperature=temperature, top_p=top_p,
                         repetition_penalty=repetition_penalty, watermark=watermark)
    glue = "" if (lang == "zh" or not draft or draft[-1].isspace() or raw[:1].isspace()) else " "
    whole = post.clean(draft + glue + raw, lang)
    known = [k for e in ctx.lore for k in e.keys]
    return Written(whole, {"mode": "continue", "tokens": tokens, "temperature": temperature, "top_p": top_p,
                           "repetition_penalty": repetition_penalty, "lang": lang,
                           "lore": [e.keys for e in active_lore(draft, ctx)], "note": ctx.note or None},
                   spelling=post.spell_suggestions(whole, known=known) if spell and lang == "en" else [])


def outline(model: Any, title: str, kind: str, sections: int, *, seed: int = 0, lang: str = "en",
            temperature: float = 0.8, watermark: Any = None) -> list[str]:
    """Section headings for a piece, generated under a JSON Schema (always ``sections`` of them)."""
    tm = load_model(model)
    schema = {"type": "object", "properties": {"sections": {
        "type": "array", "minItems": sections, "maxItems": sections,
        "items": {"type": "string", "minLength": 3, "maxLength": 48, "pattern": r"^[^\n\r\t\"\\#]+$"}}},
        "required": ["sections"]}
    what = _KINDS_ZH[kind] if lang == "zh" else KINDS[kind]
    prompt = (f"《{title}》——{what}的提纲（JSON）：\n" if lang == "zh"
              else f"Outline of {what} titled \"{title}\", as JSON:\n")
    out = C.generate(tm, prompt, C.json_schema(schema), seed=seed, temperature=temperature,
                     **watermark_options(watermark))
    return [" ".join(h.split()) for h in out.value["sections"]]


def draft(model: Any, title: str, *, kind: str = "blog", sections: int = 3, section_tokens: int = 120,
          ctx: Context | None = None, seed: int = 0, temperature: float = 0.8, top_p: float = 0.95,
          repetition_penalty: float = 1.1, lang: str | None = None, markdown: bool = True,
          headings: Sequence[str] | None = None, spell: bool = False, watermark: Any = None) -> Written:
    """Draft a piece: outline (or ``headings``), then each section with its own token budget.
    ``watermark``: as in :func:`continue_text`."""
    if kind not in KINDS:
        raise UsageError(f"kind {kind!r} is not one of {', '.join(KINDS)}", param="kind")
    if not 1 <= sections <= 12:
        raise UsageError(f"sections={sections}: use 1..12", param="sections")
    if section_tokens < 1:
        raise UsageError(f"section_tokens={section_tokens}: must be at least 1", param="section_tokens")
    if not title.strip():
        raise UsageError("title: give the piece a title or topic", param="title")
    tm = load_model(model)
    ctx = ctx or Context()
    lang = lang or post.detect_language(title)
    heads = list(headings) if headings else outline(tm, title, kind, sections, seed=seed, lang=lang,
                                                    temperature=temperature, watermark=watermark)
    so_far = f"# {title}\n" if markdown else f"{title}\n"
    parts = [so_far]
    for i, h in enumerate(heads):
        heading = f"## {h}" if markdown else h
        prompt = build_prompt(so_far + "\n" + heading + "\n", ctx)
        raw = _generate_text(tm, prompt, tokens=section_tokens, seed=seed + 1 + i, temperature=temperature,
                             top_p=top_p, repetition_penalty=repetition_penalty, watermark=watermark)
        body = post.clean(raw, lang) or raw.strip()
        section = f"\n{heading}\n\n{body}\n"
        parts.append(section)
        so_far += section
    text = "".join(parts)
    known = [k for e in ctx.lore for k in e.keys] + title.split()
    return Written(text, {"mode": "draft", "kind": kind, "sections": len(heads), "section_tokens": section_tokens,
                          "temperature": temperature, "top_p": top_p, "repetition_penalty": repetition_penalty,
                          "lang": lang, "note": ctx.note or None},
                   outline=heads, spelling=post.spell_suggestions(text, known=known) if spell and lang == "en" else [])


def release_written(written: Written, *, policy: Any, model: Any = None, model_name: str | None = None,
                    prompt: str = "", seed: int = 0, watermark: Any = None, out: Any = None, fmt: str | None = None,
                    api_key: str | None = None) -> Any:
    """Release a piece (:func:`gencraft.guard.release` under ``policy``, label ``write``): guarded, signed,
    written to ``out`` (+ ``.manifest.json``) when given and stored in the library; what ``gencraft
    write`` and the ``kits.write`` job do. ``fmt``: ``md`` or ``txt``, recorded in the parameters."""
    params = {**written.parameters, **({"format": fmt} if fmt else {})}
    return release(written.text, kind="text", label="write", policy=policy, model=model, model_name=model_name,
                   params=params, seed=seed, prompt=prompt, watermark=watermark, out=out, api_key=api_key)

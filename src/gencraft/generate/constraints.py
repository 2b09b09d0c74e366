"""Structured generation: constrain any text model's output to a JSON Schema, a regular
expression, a choice list or a bounded text field, by masking tokens at every step.

The masking engine is `llguidance <https://github.com/guidance-ai/llguidance>`_. We compared the
four well-kept engines on gencraft's own tokenizers (char = BPE-without-merges with byte fallback,
bpe = byte-level BPE; both describe each token by the bytes it adds) on this machine (torch 2.13
CPU, Python 3.11); figures in ``bench/RESULTS.md``, script ``bench/constraints.py``:

* **llguidance** -- installs as one abi3 wheel with no Python dependencies; takes the vocabulary
  as ``bytes`` per token (so byte-fallback pieces and partial UTF-8 tokens are exact); computes
  each mask lazily (no index to build; tens of microseconds a token, a few percent of a tiny
  model's step); enforces integer/number ranges, ``maxLength`` with ``pattern``, enums and
  required fields; every random-walk output validated.
* **outlines-core** -- installs and takes a bytes vocabulary, but compiles JSON Schema to a regex
  that ignores ``minimum``/``maximum`` (a random model wrote ``"age": 640311167228296170568273``
  for ``maximum: 120``) and allows free whitespace, so outputs do not always validate.
* **xgrammar** -- needs the extra ``apache-tvm-ffi`` wheel and imports torch; with a RAW bytes
  vocabulary it let raw control characters into JSON strings (``json.loads`` rejected the output).
* **xgrammar** also ignores ``minLength``/``maxLength`` next to a ``pattern`` (its own warning).
* **lm-format-enforcer** -- pure Python; describes tokens by their *decoded strings*, which a
  byte-fallback token (half a UTF-8 character) does not have, and refuses a string schema with
  both a ``pattern`` and a length.

So llguidance does the masking; this module adds what it lacks for gencraft's guarantees:

* **Ad-copy text fields** (:func:`text_field`: a character limit x required terms x banned terms)
  are masked by our own byte automaton (:class:`TextFieldMatcher`), because llguidance's lexer
  gives up on that intersection ("too many expressions constructed") at ad-copy sizes.

* **Termination.** Every grammar made here accepts a *finite* language with a known upper bound
  on its length in bytes (``Grammar.max_bytes``): JSON Schemas are closed before compiling
  (strings without ``maxLength`` get one, arrays get ``maxItems``, numbers a range and a step,
  objects ``additionalProperties: false``, whitespace is fixed) and regexes are intersected with
  ``.{0,max_chars}``. Every token adds at least one byte, so after at most ``max_bytes`` tokens the
  only token the mask leaves is end-of-text: even a random-weight model always finishes with a
  complete, valid document. :func:`generate` sets the token budget to that bound.
* **Validation.** ``Grammar.parse(text)`` re-checks the finished text (``json.loads`` +
  ``jsonschema`` against the caller's *original* schema, ``re.fullmatch`` for regexes), so a
  kit never hands on an output it has not verified.

Use it either through :class:`ConstraintProcessor` -- a logits processor ``(ids, logits) ->
logits`` for the decoding engine's ``processors=[...]`` hook -- or through :func:`generate`, a
small sampling loop over the step interface that also returns the model's log-likelihood of the
output (the ad kit ranks by it).
"""

from __future__ import annotations

import copy
import heapq
import json
import math
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gencraft.errors import UsageError
from gencraft.generate import generate as engine_generate
from gencraft.generate.config import GenerationConfig
from gencraft.limits import check_depth

try:  # the masking engine; a hard dependency of structured generation only
    import llguidance
    import llguidance.numpy as llg_numpy
except ImportError:  # pragma: no cover - reported when a constraint is first built
    llguidance = None  # type: ignore[assignment]
    llg_numpy = None  # type: ignore[assignment]

# Defaults that close an open JSON Schema (documented in the module docstring).
DEFAULT_MAX_STRING = 64
DEFAULT_MAX_ITEMS = 8
DEFAULT_INT_RANGE = (-(10**9), 10**9)
DEFAULT_NUMBER_RANGE = (-1e6, 1e6)
DEFAULT_NUMBER_STEP = 0.01
_MAX_SCHEMA_DEPTH = 12

# Lexer budget for text fields that intersect a length bound with required and banned terms: the
# defaults stop at ~250k derivative expressions, which 12 banned claims x 90 characters exceed.
_HEAVY_LIMITS = {"initial_lexer_fuel": 20_000_000, "step_lexer_fuel": 5_000_000, "max_lexer_states": 1_000_000}

_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _require_engine() -> None:
    if llguidance is None:
        raise UsageError("structured generation needs the 'llguidance' package; `pip install llguidance`",
                         param="constraint")


# ---------------------------------------------------------------- grammars


@dataclass(frozen=True)
class Grammar:
    """A compiled constraint: the llguidance grammar, a byte bound, and how to check a result.

    ``kind`` is ``"json"``, ``"regex"``, ``"choice"`` or ``"lark"``. ``schema`` is the caller's
    original JSON Schema (validation uses it, not the closed copy the mask was built from).
    """

    kind: str
    spec: str  # what llguidance.LLMatcher takes
    max_bytes: int  # no accepted output is longer than this many UTF-8 bytes
    schema: dict[str, Any] | None = None
    pattern: str | None = None
    options: tuple[str, ...] = ()
    description: str = ""
    heavy: bool = False  # intersections/negations: give the lexer more room (see _HEAVY_LIMITS)

    @property
    def max_tokens(self) -> int:
        """Token budget that always suffices: each token adds >= 1 byte, plus end-of-text."""
        return self.max_bytes + 1

    def parse(self, text: str) -> Any:
        """Check a finished output; return the parsed value (JSON) or the text. Raises UsageError."""
        if self.kind == "json":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise UsageError(f"constrained output is not JSON ({e.msg}): {text[:80]!r}",
                                 param="constraint") from None
            validate_json(value, self.schema or {})
            return value
        if self.kind == "choice":
            if text not in self.options:
                raise UsageError(f"output {text!r} is not one of the choices", param="constraint")
            return text
        if self.kind == "text":
            cfg = json.loads(self.spec)["text_field"]
            low = text.lower()
            if not cfg["min_chars"] <= len(text) <= cfg["max_chars"]:
                raise UsageError(f"output has {len(text)} characters, outside {cfg['min_chars']}.."
                                 f"{cfg['max_chars']}", param="constraint")
            if any(r not in text for r in cfg["required"]) or any(b in low for b in cfg["banned"]):
                raise UsageError(f"output {text!r} breaks the required/banned terms", param="constraint")
        if self.kind == "regex" and self.pattern is not None:
            if re.fullmatch(self.pattern, text, flags=re.DOTALL) is None:
                raise UsageError(f"output {text!r} does not match {self.pattern!r}", param="constraint")
        return text


def validate_json(value: Any, schema: dict[str, Any], *, where: str = "output") -> None:
    """Validate ``value`` against a JSON Schema; raise UsageError naming the failing path."""
    import jsonschema

    try:
        jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise UsageError(f"{where} fails the schema at {path}: {e.message}", param="schema") from None
    except jsonschema.SchemaError as e:
        raise UsageError(f"invalid JSON Schema: {e.message}", param="schema") from None


def _check_schema(schema: Any) -> None:
    import jsonschema

    if not isinstance(schema, dict):
        raise UsageError("a JSON Schema must be a JSON object", param="schema")
    check_depth(schema, "JSON Schema", "schema")  # jsonschema and the grammar compiler recurse
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise UsageError(f"invalid JSON Schema: {e.message}", param="schema") from None


def close_schema(schema: dict[str, Any], *, max_string: int = DEFAULT_MAX_STRING,
                 max_items: int = DEFAULT_MAX_ITEMS) -> dict[str, Any]:
    """A copy of ``schema`` whose language is finite (see the module docstring)."""
    root = copy.deepcopy(schema)
    defs = {**root.get("$defs", {}), **root.get("definitions", {})}

    def walk(s: Any, depth: int) -> Any:
        if not isinstance(s, dict):
            return s
        if depth > _MAX_SCHEMA_DEPTH:
            raise UsageError(f"JSON Schema nests deeper than {_MAX_SCHEMA_DEPTH} levels (recursive $ref?); "
                             "flatten it", param="schema")
        if "$ref" in s:  # inline local refs so each use is closed (and recursion is caught)
            ref = s["$ref"]
            name = ref.rsplit("/", 1)[-1]
            if not ref.startswith("#/") or name not in defs:
                raise UsageError(f"JSON Schema $ref {ref!r} is not a local #/$defs entry", param="schema")
            merged = {**copy.deepcopy(defs[name]), **{k: v for k, v in s.items() if k != "$ref"}}
            return walk(merged, depth + 1)
        s = dict(s)
        s.pop("$defs", None)
        s.pop("definitions", None)
        for key in ("anyOf", "oneOf", "allOf"):
            if key in s:
                s[key] = [walk(x, depth + 1) for x in s[key]]
        if "enum" in s or "const" in s:
            return s
        types = s.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        if "string" in types:
            s.setdefault("maxLength", max(max_string, int(s.get("minLength", 0))))
        if "integer" in types:
            s.setdefault("minimum", DEFAULT_INT_RANGE[0])
            s.setdefault("maximum", DEFAULT_INT_RANGE[1])
        if "number" in types:
            s.setdefault("minimum", DEFAULT_NUMBER_RANGE[0])
            s.setdefault("maximum", DEFAULT_NUMBER_RANGE[1])
            s.setdefault("multipleOf", DEFAULT_NUMBER_STEP)
        if "array" in types or "items" in s:
            s.setdefault("maxItems", max(max_items, int(s.get("minItems", 0))))
            if "items" in s:
                s["items"] = walk(s["items"], depth + 1)
            if "prefixItems" in s:
                s["prefixItems"] = [walk(x, depth + 1) for x in s["prefixItems"]]
        if "object" in types or "properties" in s:
            s["properties"] = {k: walk(v, depth + 1) for k, v in s.get("properties", {}).items()}
            s["additionalProperties"] = False
            s.pop("patternProperties", None)
        if not types and not any(k in s for k in ("anyOf", "oneOf", "allOf", "properties", "items")):
            # an unconstrained value: keep it finite by allowing a short string, number, bool or null
            return {"anyOf": [{"type": "string", "maxLength": max_string}, {"type": "integer",
                    "minimum": DEFAULT_INT_RANGE[0], "maximum": DEFAULT_INT_RANGE[1]},
                    {"type": "boolean"}, {"type": "null"}]}
        return s

    return walk(root, 0)


def _json_len(v: Any) -> int:
    return max(len(json.dumps(v, ensure_ascii=False).encode()), len(json.dumps(v).encode()))


def schema_max_bytes(s: dict[str, Any]) -> int:
    """Upper bound on the UTF-8 length of any JSON text the closed schema ``s`` accepts."""
    if "const" in s:
        return _json_len(s["const"])
    if "enum" in s:
        return max(_json_len(v) for v in s["enum"])
    branches = [schema_max_bytes(x) for key in ("anyOf", "oneOf", "allOf") for x in s.get(key, [])]
    if branches and "type" not in s:
        return max(branches)
    types = s.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if "properties" in s and "object" not in types:
        types.append("object")
    sizes = [max(branches)] if branches else []
    for t in types:
        if t == "string":
            sizes.append(2 + 6 * int(s.get("maxLength", DEFAULT_MAX_STRING)))  # worst case: \uXXXX each
        elif t == "integer":
            sizes.append(1 + max(len(str(int(abs(s["minimum"])))), len(str(int(abs(s["maximum"]))))))
        elif t == "number":
            step = s.get("multipleOf", DEFAULT_NUMBER_STEP)
            decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
            whole = max(len(str(int(abs(s["minimum"])))), len(str(int(abs(s["maximum"])))))
            sizes.append(1 + whole + 1 + decimals + 8)  # sign, digits, point, exponent slack
        elif t == "boolean":
            sizes.append(5)
        elif t == "null":
            sizes.append(4)
        elif t == "array":
            items = s.get("items", {})
            per = schema_max_bytes(items) if items else DEFAULT_MAX_STRING * 6 + 2
            pre = sum(schema_max_bytes(x) + 2 for x in s.get("prefixItems", []))
            sizes.append(2 + pre + int(s["maxItems"]) * (per + 2))
        elif t == "object":
            props = s.get("properties", {})
            sizes.append(2 + sum(_json_len(k) + 2 + schema_max_bytes(v) + 2 for k, v in props.items()))
    if not sizes:
        raise UsageError("JSON Schema has a value with no type, enum or const that gencraft can bound; "
                         "give it a \"type\"", param="schema")
    return max(sizes)


def json_schema(schema: dict[str, Any], *, max_string: int = DEFAULT_MAX_STRING,
                max_items: int = DEFAULT_MAX_ITEMS) -> Grammar:
    """A grammar for JSON documents that validate against ``schema`` (a dict)."""
    _require_engine()
    _check_schema(schema)
    closed = close_schema(schema, max_string=max_string, max_items=max_items)
    try:
        spec = llguidance.LLMatcher.grammar_from_json_schema(closed, defaults=_JSON_OPTIONS)
    except Exception as e:  # llguidance reports unsupported keywords here
        raise UsageError(f"JSON Schema not supported by the constraint engine: {e}", param="schema") from None
    _validate_spec(spec, "schema")
    return Grammar("json", spec, schema_max_bytes(closed) + 16, schema=schema,
                   description=f"JSON Schema {schema.get('title', '')}".strip())


def _lark_regex(pattern: str) -> str:
    """A regex as a Lark ``/.../`` literal (slashes escaped)."""
    return "/" + pattern.replace("/", "\\/") + "/"


def _check_regex(pattern: str, param: str) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        raise UsageError(f"{param}: invalid regular expression {pattern!r}: {e}", param=param) from None


def regex(pattern: str, *, max_chars: int = 256) -> Grammar:
    """A grammar for text matching ``pattern`` in full, at most ``max_chars`` characters long."""
    _require_engine()
    _check_regex(pattern, "regex")
    spec = llguidance.LLMatcher.grammar_from_lark(
        f"start: VALUE\nVALUE: {_lark_regex(pattern)} & /(?s:.{{0,{int(max_chars)}}})/\n")
    _validate_spec(spec, "regex")
    return Grammar("regex", spec, 4 * int(max_chars), pattern=pattern, description=f"regex {pattern}",
                   heavy=True)


def choice(options: Sequence[str]) -> Grammar:
    """A grammar that produces exactly one of ``options``."""
    _require_engine()
    opts = tuple(dict.fromkeys(str(o) for o in options))
    if not opts or any(o == "" for o in opts):
        raise UsageError("choice needs at least one non-empty option", param="choices")
    alts = " | ".join(json.dumps(o) for o in opts)
    spec = llguidance.LLMatcher.grammar_from_lark(f"start: {alts}\n")
    _validate_spec(spec, "choices")
    return Grammar("choice", spec, max(len(o.encode()) for o in opts), options=opts,
                   description="one of " + ", ".join(opts))


def text_field(*, max_chars: int, min_chars: int = 1, required: Sequence[str] = (),
               banned: Sequence[str] = (), allow_newlines: bool = False) -> Grammar:
    """Free text of ``min_chars..max_chars`` characters that contains every ``required`` term
    (exactly) and none of the ``banned`` ones (ignoring ASCII case), without control characters
    (newlines only with ``allow_newlines``). The limit is part of the mask: the model can never
    write past it, and a required term is forced in while it still fits, so nothing is truncated.

    Masked by gencraft's own byte automaton (:class:`TextFieldMatcher`): llguidance's lexer gives
    up ("too many expressions") on the length bound x required x banned intersections of ad copy.
    """
    if max_chars < 1 or min_chars < 0 or min_chars > max_chars:
        raise UsageError(f"max_chars={max_chars}, min_chars={min_chars}: need 0 <= min_chars <= max_chars, "
                         "max_chars >= 1", param="max_chars")
    req = tuple(dict.fromkeys(t for t in required if t))
    ban = tuple(dict.fromkeys(t.lower() for t in banned if t))
    if sum(len(t) for t in req) + max(0, len(req) - 1) > max_chars:
        raise UsageError(f"required terms {list(req)} do not fit in {max_chars} characters", param="required")
    for r in req:
        for b in ban:
            if b in r.lower():
                raise UsageError(f"required term {r!r} contains banned term {b!r}", param="banned")
    spec = json.dumps({"text_field": {"max_chars": int(max_chars), "min_chars": int(min_chars),
                                      "required": list(req), "banned": list(ban),
                                      "allow_newlines": bool(allow_newlines)}})
    return Grammar("text", spec, 4 * int(max_chars), options=req + ban,
                   description=f"text {min_chars}..{max_chars} chars")


class _Automaton:
    """Aho-Corasick over bytes: ``delta[state, byte]`` and the terms (bitmask) each state completes."""

    def __init__(self, terms: Sequence[bytes]) -> None:
        goto: list[dict[int, int]] = [{}]
        out = [0]
        for i, t in enumerate(terms):
            s = 0
            for b in t:
                if b not in goto[s]:
                    goto.append({})
                    out.append(0)
                    goto[s][b] = len(goto) - 1
                s = goto[s][b]
            out[s] |= 1 << i
        fail = [0] * len(goto)
        delta = np.zeros((len(goto), 256), dtype=np.int32)
        queue = []
        for b, nxt in goto[0].items():
            delta[0, b] = nxt
            queue.append(nxt)
        while queue:  # breadth first: fail links, inherited outputs, the full transition table
            s = queue.pop(0)
            out[s] |= out[fail[s]]
            delta[s] = delta[fail[s]]
            for b, nxt in goto[s].items():
                fail[nxt] = int(delta[fail[s], b]) if s else 0
                delta[s, b] = nxt
                queue.append(nxt)
        self.delta = delta
        self.out = np.array(out, dtype=np.int64)


# UTF-8 validity as a small automaton: state = continuation bytes still due * 5 + allowed range of the next
_UTF8_RANGES = [(0x80, 0xBF), (0xA0, 0xBF), (0x80, 0x9F), (0x90, 0xBF), (0x80, 0x8F)]


def _utf8_tables(allow_newlines: bool) -> tuple[np.ndarray, np.ndarray]:
    """``nxt[state, byte]`` (-1: invalid or control byte) and ``chars[state, byte]`` (1 when the
    byte starts a character)."""
    nxt = np.full((20, 256), -1, dtype=np.int32)
    chars = np.zeros((20, 256), dtype=np.int32)
    for b in range(256):  # state 0: a new character starts
        if b < 0x80:
            if (b >= 0x20 and b != 0x7F) or (allow_newlines and b == 0x0A):
                nxt[0, b], chars[0, b] = 0, 1
        elif 0xC2 <= b <= 0xDF:  # after 0xC2 only A0..BF: no C1 control characters
            nxt[0, b], chars[0, b] = 5 + (b == 0xC2), 1
        elif 0xE0 <= b <= 0xEF:
            nxt[0, b], chars[0, b] = 10 + {0xE0: 1, 0xED: 2}.get(b, 0), 1
        elif 0xF0 <= b <= 0xF4:
            nxt[0, b], chars[0, b] = 15 + {0xF0: 3, 0xF4: 4}.get(b, 0), 1
    for due in (1, 2, 3):
        for r, (lo, hi) in enumerate(_UTF8_RANGES):
            nxt[due * 5 + r, lo:hi + 1] = (due - 1) * 5
    return nxt, chars


State = tuple[int, int, int, int]  # banned automaton, required automaton, required found, UTF-8


class TextFieldMatcher:
    """The mask for :func:`text_field`, over bytes, for any tokenizer.

    State = (banned-terms automaton, required-terms automaton, required terms found, UTF-8 state)
    plus the characters written. A token is allowed when its bytes keep the text valid UTF-8
    without control characters, spell no banned term, and leave room -- within ``max_chars`` --
    for the shortest way to finish the required terms still missing (a small search over the
    automata, so a term split across tokens or overlapping earlier text is handled exactly).
    End-of-text is allowed once every term is in and ``min_chars`` is reached. Each state's
    effect of every token is computed once, for the whole vocabulary at a time (numpy).
    """

    def __init__(self, grammar: Grammar, tokenizer: Any) -> None:
        cfg = json.loads(grammar.spec)["text_field"]
        self.max_chars, self.min_chars = cfg["max_chars"], cfg["min_chars"]
        self.req = _Automaton([t.encode() for t in cfg["required"]])
        self.ban = _Automaton([t.encode() for t in cfg["banned"]])
        self.all_found = (1 << len(cfg["required"])) - 1
        self.utf_next, self.utf_chars = _utf8_tables(cfg["allow_newlines"])
        self.lower = np.arange(256, dtype=np.int32)
        self.lower[ord("A"):ord("Z") + 1] += 32
        table = token_table(tokenizer)
        self.vocab_size, self.eos_id = len(table), int(tokenizer.eos_id)
        # tokens sorted longest first, so byte column j only touches the tokens that long
        lengths = np.array([len(b) for b in table])
        self.order = np.argsort(-lengths, kind="stable")
        self.longer = [int((lengths > j).sum()) for j in range(max(1, int(lengths.max())))]
        self.bytes = np.full((len(table), len(self.longer)), -1, dtype=np.int32)
        for row, i in enumerate(self.order):
            self.bytes[row, :lengths[i]] = list(table[i])
        self.empty = lengths[self.order] == 0
        alphabet = {b for t in cfg["required"] + cfg["banned"] for b in t.encode()}
        filler = next((c for c in b" .-x_qz" if c not in alphabet), 0x20)
        self.search_bytes = sorted(alphabet | {filler})
        self.state: State = (0, 0, 0, 0)
        self.chars = 0
        self.stopped = False
        self._cache: dict[State, tuple[np.ndarray, ...]] = {}
        self._need: dict[State, int] = {}
        # plain-list copies of the tables for the byte-at-a-time search (numpy scalars are slow)
        self._l_utf, self._l_chars = self.utf_next.tolist(), self.utf_chars.tolist()
        self._l_ban, self._l_ban_out = self.ban.delta.tolist(), self.ban.out.tolist()
        self._l_req, self._l_req_out = self.req.delta.tolist(), self.req.out.tolist()
        self._l_lower = self.lower.tolist()

    def _step_byte(self, st: State, b: int) -> tuple[State, int] | None:
        ban, req, found, utf = st
        nu = self._l_utf[utf][b]
        if nu < 0:
            return None
        nb = self._l_ban[ban][self._l_lower[b]]
        if self._l_ban_out[nb]:
            return None
        nr = self._l_req[req][b]
        return (nb, nr, found | self._l_req_out[nr], nu), self._l_chars[utf][b]

    def need(self, st: State) -> int:
        """Fewest characters that finish the current character and every missing required term."""
        if st in self._need:
            return self._need[st]
        best = {st: 0}
        heap = [(0, st)]
        result = 1 << 30
        while heap:  # Dijkstra; continuation bytes cost no character
            cost, cur = heapq.heappop(heap)
            if cost > best.get(cur, 1 << 30):
                continue
            if cur[2] == self.all_found and cur[3] == 0:
                result = cost
                break
            if cost > self.max_chars:
                break
            for b in (self.search_bytes if cur[3] == 0 else range(0x80, 0xC0)):
                nxt = self._step_byte(cur, b)
                if nxt is not None and cost + nxt[1] < best.get(nxt[0], 1 << 30):
                    best[nxt[0]] = cost + nxt[1]
                    heapq.heappush(heap, (cost + nxt[1], nxt[0]))
        self._need[st] = result
        return result

    def _transitions(self, st: State) -> tuple[np.ndarray, ...]:
        """Every token's effect from state ``st``, for the whole vocabulary at once."""
        if st in self._cache:
            return self._cache[st]
        V = self.vocab_size
        ban = np.full(V, st[0], dtype=np.int32)
        req = np.full(V, st[1], dtype=np.int32)
        found = np.full(V, st[2], dtype=np.int64)
        utf = np.full(V, st[3], dtype=np.int32)
        dchars = np.zeros(V, dtype=np.int64)
        dead = self.empty.copy()
        for j, n in enumerate(self.longer):  # rows [:n] are the tokens with a byte in column j
            b = self.bytes[:n, j]
            live = ~dead[:n]
            bb = np.where(live, b, 0)
            u, a, r = utf[:n], ban[:n], req[:n]
            nu = self.utf_next[u, bb]
            nb = self.ban.delta[a, self.lower[bb]]
            nr = self.req.delta[r, bb]
            bad = live & ((nu < 0) | (self.ban.out[nb] != 0))
            dead[:n] |= bad
            live &= ~bad
            dchars[:n] += np.where(live, self.utf_chars[u, bb], 0)
            utf[:n] = np.where(live, nu, u)
            ban[:n] = np.where(live, nb, a)
            req[:n] = np.where(live, nr, r)
            found[:n] = np.where(live, found[:n] | self.req.out[nr], found[:n])
        need = np.zeros(V, dtype=np.int64)
        ok = ~dead
        if ok.any():
            keys = np.stack([ban[ok], req[ok], found[ok], utf[ok]], axis=1)
            uniq, inv = np.unique(keys, axis=0, return_inverse=True)
            needs = np.array([self.need(tuple(int(x) for x in k)) for k in uniq], dtype=np.int64)
            need[ok] = needs[inv.reshape(-1)]
        back = np.empty_like(self.order)  # from length order back to token ids
        back[self.order] = np.arange(V)
        out = tuple(x[back] for x in (dead, dchars, need, ban, req, found, utf))
        self._cache[st] = out
        return out

    def allowed(self) -> np.ndarray:
        """Boolean mask over the vocabulary for the next token."""
        if self.stopped:
            mask = np.zeros(self.vocab_size, dtype=bool)
        else:
            dead, dchars, need, *_ = self._transitions(self.state)
            mask = ~dead & (self.chars + dchars + need <= self.max_chars)
        mask[self.eos_id] = self.is_accepting()
        return mask

    def is_accepting(self) -> bool:
        return self.state[2] == self.all_found and self.state[3] == 0 and self.chars >= self.min_chars

    def is_stopped(self) -> bool:
        return self.stopped

    def deep_copy(self) -> TextFieldMatcher:
        """An independent matcher in the same state (the per-state caches stay shared)."""
        return copy.copy(self)

    def consume_token(self, t: int) -> bool:
        if t == self.eos_id:
            self.stopped = True
            return self.is_accepting()
        dead, dchars, need, ban, req, found, utf = self._transitions(self.state)
        if dead[t] or self.chars + int(dchars[t]) + int(need[t]) > self.max_chars:
            raise UsageError("text constraint: a token outside the mask was fed to the matcher",
                             param="constraint")
        self.chars += int(dchars[t])
        self.state = (int(ban[t]), int(req[t]), int(found[t]), int(utf[t]))
        return True


def lark(grammar: str, *, max_bytes: int) -> Grammar:
    """A raw llguidance Lark grammar. The caller promises its language is finite within ``max_bytes``."""
    _require_engine()
    spec = llguidance.LLMatcher.grammar_from_lark(grammar)
    _validate_spec(spec, "grammar")
    return Grammar("lark", spec, int(max_bytes), description="lark grammar")


def _validate_spec(spec: str, param: str) -> None:
    err = llguidance.LLMatcher.validate_grammar(spec)
    if err and not err.startswith("WARNING"):
        raise UsageError(f"{param}: the constraint engine rejected it: {' '.join(str(err).split())[:200]}",
                         param=param)


# ---------------------------------------------------------------- tokenizers

_LL_CACHE: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


# first bytes of the tokens that end a word in prose (see ConstraintProcessor._word_bounds)
WORD_ENDS = {b" ", b"\n", b"\r", b"\t", b",", b".", b";", b":", b"!", b"?", b")"}


def token_table(tokenizer: Any) -> list[bytes]:
    """``token_bytes`` of every id (the tokenizer's own table when it has one)."""
    if hasattr(tokenizer, "token_bytes_table"):
        return [bytes(b) for b in tokenizer.token_bytes_table()]
    return [bytes(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size)]


def special_ids(tokenizer: Any, table: list[bytes] | None = None) -> list[int]:
    """Ids that are not text: end-of-text and any token that adds no bytes."""
    table = token_table(tokenizer) if table is None else table
    return sorted({int(tokenizer.eos_id)} | {i for i, b in enumerate(table) if not b})


class _Wrapper:
    """The object ``llguidance.LLTokenizer`` reads a vocabulary from."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self.eos_token_id = int(tokenizer.eos_id)
        self.bos_token_id = None
        table = token_table(tokenizer)
        specials = set(special_ids(tokenizer, table))
        self.special_token_ids = sorted(specials)
        # llguidance marks special tokens with a leading 0xFF byte (never valid UTF-8)
        self.tokens = [b"\xff<|special_%d|>" % i if i in specials else b for i, b in enumerate(table)]

    def __call__(self, s: bytes | str) -> list[int]:
        text = s.decode("utf-8", errors="replace") if isinstance(s, bytes) else s
        return list(self._tok.encode(text))


def engine_tokenizer(tokenizer: Any) -> Any:
    """The llguidance view of a gencraft tokenizer (built once per tokenizer object)."""
    _require_engine()
    try:
        return _LL_CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    ll = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Wrapper(tokenizer)))
    try:
        _LL_CACHE[tokenizer] = ll
    except TypeError:
        pass
    return ll


# ---------------------------------------------------------------- the logits processor


def new_matcher(grammar: Grammar, ll_tokenizer: Any) -> Any:
    """A fresh llguidance matcher for ``grammar`` (raises UsageError when it cannot be built)."""
    limits = llguidance.LLParserLimits(**_HEAVY_LIMITS) if grammar.heavy else None
    m = llguidance.LLMatcher(ll_tokenizer, grammar.spec, log_level=0, limits=limits)
    _check_matcher(m)
    return m


def _check_matcher(m: Any) -> None:
    if m.is_error():
        msg = " ".join(m.get_error().split())[:160]
        raise UsageError(f"constraint engine gave up ({msg}); simplify the constraint (fewer/shorter "
                         "terms, smaller limits)", param="constraint")


def accepts(grammar: Grammar, tokenizer: Any, token_ids: Sequence[int]) -> bool:
    """True when ``token_ids`` form a complete document of ``grammar`` (checked from scratch)."""
    if grammar.kind == "text":
        tm = TextFieldMatcher(grammar, tokenizer)
        try:
            for t in token_ids:
                tm.consume_token(int(t))
        except UsageError:
            return False
        return tm.is_accepting()
    m = new_matcher(grammar, engine_tokenizer(tokenizer))
    ok = m.consume_tokens([int(t) for t in token_ids]) if token_ids else True
    return bool(ok) and not m.is_error() and m.is_accepting()


class ConstraintProcessor:
    """Logits processor that masks every token the grammar does not allow next.

    One grammar matcher per sequence. The first call remembers where the prompt ends; each later
    call first feeds every matcher the tokens sampled since, then masks. When the decoding engine
    drops finished rows from the batch, the remaining rows are matched back to their matchers by
    their token history (the engine keeps the rows' order). Once a document is complete only
    end-of-text stays allowed.
    """

    def __init__(self, grammar: Grammar, tokenizer: Any) -> None:
        self.grammar = grammar
        self.tokenizer = tokenizer
        self._ll = engine_tokenizer(tokenizer) if grammar.kind != "text" else None
        self.vocab_size = int(tokenizer.vocab_size)
        self.eos_id = int(tokenizer.eos_id)
        self._start: int | None = None
        self._by_hist: dict[tuple[int, ...], Any] = {}  # generated tokens -> matcher in that state
        self._last: list[Any] = []
        self._bitmask: np.ndarray | None = None
        self._bounds: tuple[torch.Tensor, ...] | None = None

    def _new_matcher(self) -> Any:
        if self.grammar.kind == "text":
            return TextFieldMatcher(self.grammar, self.tokenizer)
        return new_matcher(self.grammar, self._ll)

    def _match_rows(self, gen: list[list[int]]) -> list[Any]:
        """A matcher for each current row, advanced to that row's tokens.

        Rows are found by their token history, so the engine may drop finished rows, reorder
        them or copy them (beam search): a history seen for a second time gets a copy of the
        matcher of its longest known prefix.
        """
        known = self._by_hist
        parents: list[tuple[int, ...]] = []
        for row in gen:
            h = tuple(row)
            cut = len(h)
            while cut >= 0 and h[:cut] not in known:
                cut -= 1
            if cut < 0:
                raise UsageError("ConstraintProcessor: a batch row does not continue any constrained "
                                 "sequence; use a new processor per generate() call", param="processors")
            parents.append(h[:cut])
        uses: dict[tuple[int, ...], int] = {}
        for p in parents:
            uses[p] = uses.get(p, 0) + 1
        fresh: dict[tuple[int, ...], Any] = {}
        out = []
        for row, parent in zip(gen, parents, strict=True):
            h = tuple(row)
            if h in fresh:  # identical history in this batch: the same state
                uses[parent] -= 1
                out.append(fresh[h])
                continue
            uses[parent] -= 1
            # copy before advancing while another row still needs the parent's state
            m = known[parent].deep_copy() if uses[parent] > 0 else known[parent]
            for tok in h[len(parent):]:
                if not m.is_stopped():
                    m.consume_token(int(tok))
            fresh[h] = m
            out.append(m)
        self._by_hist = fresh
        return out

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        B = ids.shape[0]
        if self._start is None:
            self._start = ids.shape[1]
            self._by_hist = {(): self._new_matcher()}
        gen = ids[:, self._start:].tolist()
        matchers = self._match_rows(gen)
        text = self._ll is None
        if text:
            rows = np.zeros((B, self.vocab_size), dtype=bool)
        else:
            if self._bitmask is None or self._bitmask.shape[0] != B:
                self._bitmask = llg_numpy.allocate_token_bitmask(B, self._ll.vocab_size)
            bitmask = self._bitmask
        for b, matcher in enumerate(matchers):
            if text:
                rows[b] = matcher.allowed()
            else:
                llg_numpy.fill_next_token_bitmask(matcher, bitmask, b)
                _check_matcher(matcher)
        if not text:
            rows = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")[:, : self.vocab_size]
        allowed = torch.from_numpy(rows.astype(bool)).to(logits.device)
        V = logits.shape[-1]
        if V > allowed.shape[1]:  # model's output layer padded past the tokenizer's vocabulary
            allowed = torch.nn.functional.pad(allowed, (0, V - allowed.shape[1]), value=False)
        allowed = allowed[:, :V]
        self._last = matchers
        for b, matcher in enumerate(matchers):
            if matcher.is_stopped() or not allowed[b].any():
                allowed[b] = False
                allowed[b, self.eos_id] = True
        if text:
            return logits.masked_fill(~allowed, float("-inf"))
        return self._word_bounds(ids, logits, allowed).masked_fill(~allowed, float("-inf"))

    def _word_bounds(self, ids: torch.Tensor, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Carry the model's sense of word boundaries into JSON strings, which prose never showed it.

        - A string's first word: a byte-level BPE spells a word in prose with a leading space
          (`` dragon``), which a pattern like ``^[a-z]+$`` forbids; that token's probability goes to
          the same word without the space (``dragon``) when the grammar allows it, so the string
          starts with a word rather than whatever fragment is left.
        - A word's end: where a string may close but the model's word ends in a way the grammar
          forbids here (a space inside ``^[a-z]+$``, a newline inside any JSON string), those
          tokens' probability goes to the closing quote: the model says "this word is done", the
          quote is the grammar's way to say it.

        Without this a small model puts almost no mass on ``"`` after letters, so pattern strings
        ran to their maxLength ("ednesdayimeeen"). Only probability the grammar would discard moves.
        """
        if self._bounds is None:
            table = token_table(self.tokenizer)
            V = logits.shape[-1]
            table = table[:V] + [b""] * max(0, V - len(table))
            index = {b: i for i, b in enumerate(table) if b}
            pairs = [(i, index[b[1:]]) for i, b in enumerate(table) if b[:1] == b" " and b[1:] in index]
            dev = logits.device
            self._bounds = (torch.tensor([b[:1] in WORD_ENDS for b in table], device=dev),
                            torch.tensor([b[:1] == b'"' for b in table], device=dev),
                            torch.tensor([b[-1:] == b'"' for b in table], device=dev),
                            torch.tensor([t for t, _ in pairs], dtype=torch.long, device=dev),
                            torch.tensor([u for _, u in pairs], dtype=torch.long, device=dev))
        ends, opens, closes_quote, spaced, bare = self._bounds
        out = logits.clone()
        ninf = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
        gen = ids.shape[1] > self._start
        fresh = closes_quote[ids[:, -1]] if gen else torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        if len(spaced) and bool(fresh.any()):  # just after an opening quote: a word may start
            move = fresh[:, None] & ~allowed[:, spaced] & allowed[:, bare]
            out[:, bare] = torch.where(move, torch.logaddexp(logits[:, bare], logits[:, spaced]), logits[:, bare])
        lost = ends & ~allowed  # word endings the grammar refuses here
        close = opens & allowed  # ways to close the string
        rows = ~fresh & lost.any(1) & close.any(1)
        if bool(rows.any()):
            lg = out[rows]
            extra = torch.where(lost[rows], logits[rows], ninf).logsumexp(-1, keepdim=True)
            q = torch.where(close[rows], lg, ninf)
            share = q - q.logsumexp(-1, keepdim=True)  # each quote token's part of the closing mass
            out[rows] = torch.where(close[rows], torch.logaddexp(lg, extra + share), lg)
        return out

    def accepting(self, row: int = 0) -> bool:
        """True when the output of ``row`` so far is a complete document of the grammar."""
        return bool(self._last) and bool(self._last[row].is_accepting())


# ---------------------------------------------------------------- a small sampling loop


@dataclass
class Structured:
    """One constrained output: the text, its parsed value, token ids and log-likelihood."""

    text: str
    value: Any
    token_ids: list[int] = field(default_factory=list)
    logprob: float = 0.0  # sum of the model's own (unmasked) log-probabilities of the tokens

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(1, len(self.token_ids))


def _parts(model: Any, tokenizer: Any | None) -> tuple[Any, Any]:
    """Accept a TextModel (``.model`` + ``.tokenizer``) or a step model plus tokenizer."""
    if tokenizer is None:
        if not hasattr(model, "tokenizer"):
            raise UsageError("pass a TextModel (from gencraft.backends.load) or a model and its tokenizer",
                             param="model")
        return model.model, model.tokenizer
    return getattr(model, "model", model), tokenizer


def generate_many(model: Any, prompt: str | Sequence[int], grammar: Grammar, *, n: int = 1,
                  tokenizer: Any | None = None, seed: int | None = None,
                  max_new_tokens: int | None = None, **options: Any) -> list[Structured]:
    """Sample ``n`` outputs of ``grammar`` after ``prompt`` in one batch; every one is valid.

    ``model`` is a ``TextModel`` or anything with the step interface given with its ``tokenizer``.
    Decoding goes through the engine (:func:`gencraft.generate.generate`) with the constraint as a
    processor; ``options`` are its generation options (temperature, top_p, repetition_penalty...).
    ``max_new_tokens`` defaults to ``grammar.max_tokens``; a smaller budget is refused when the
    grammar could need more (the output would be cut off).
    """
    step_model, tok = _parts(model, tokenizer)
    budget = grammar.max_tokens if max_new_tokens is None else int(max_new_tokens)
    if budget < grammar.max_tokens:
        raise UsageError(f"max_new_tokens={budget} is below what this constraint may need "
                         f"({grammar.max_tokens}); raise it or lower the constraint's maxLength/max_chars",
                         param="max_new_tokens")
    if isinstance(prompt, str) and not prompt:
        prompt = [int(tok.eos_id)]  # an empty prompt starts like a new document
    extra = list(options.pop("processors", []))
    proc = ConstraintProcessor(grammar, tok)
    cfg = GenerationConfig.from_options(max_new_tokens=budget, n=int(n), seed=seed, logprobs=True,
                                        processors=[*extra, proc], stop=[], stop_at_eos=True, **options)
    if hasattr(model, "generation_config"):  # a TextModel: its unseen tokens biased away (the grammar may still need them)
        cfg = model.generation_config(cfg)
    results = engine_generate(step_model, tok, [prompt], cfg)[0]
    out = []
    for r in results:
        if r.finish_reason != "eos" or not accepts(grammar, tok, r.token_ids):
            raise UsageError(f"constrained generation ended incomplete ({r.finish_reason}); this is a bug "
                             "in the constraint, please report it", param="constraint")
        text = b"".join(bytes(tok.token_bytes(t)) for t in r.token_ids).decode("utf-8")
        out.append(Structured(text=text, value=grammar.parse(text), token_ids=list(r.token_ids),
                              logprob=float(r.score or 0.0)))
    return out


def generate(model: Any, prompt: str | Sequence[int], grammar: Grammar, *, tokenizer: Any | None = None,
             seed: int | None = None, max_new_tokens: int | None = None, **options: Any) -> Structured:
    """Sample one output of ``grammar`` from ``model`` after ``prompt``; always valid
    (see :func:`generate_many`)."""
    return generate_many(model, prompt, grammar, n=1, tokenizer=tokenizer, seed=seed,
                         max_new_tokens=max_new_tokens, **options)[0]

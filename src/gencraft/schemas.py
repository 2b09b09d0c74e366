"""The schemas of the files gencraft reads back, checked on load.

Every JSON file gencraft wrote and later reads again (a run's ``gencraft.json``, its checkpoint's
``state.json``, a dataset's ``manifest.json``, an image dataset's manifest, a provenance manifest)
goes through :func:`read_json` with a pydantic model of its shape. A file that was edited by hand,
truncated, or written by another program is then one line naming the file and the field::

    runs/x/gencraft.json: field tokenizer.vocab_size: must be >= 1 (got -3)

instead of an exception from deep inside the code that used the value. The models check the
fields the code relies on and let everything else through (``extra="allow"``): newer gencraft
versions may add fields, and older files may lack optional ones. Model and training configs
inside these files are dataclasses with their own ranges (:func:`gencraft.config.from_dict`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from gencraft.errors import GencraftError, RunError
from gencraft.limits import MAX_JSON_DEPTH, json_depth

M = TypeVar("M", bound=BaseModel)

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Count = Annotated[int, Field(ge=0)]


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, protected_namespaces=())


class TokenizerInfo(_Loose):
    kind: str
    vocab_size: Annotated[int, Field(ge=1, le=1 << 22)] | None = None
    eos_id: Annotated[int, Field(ge=0)] | None = None  # text tokenizers have one; phonemes need not


class DatasetTokenizer(TokenizerInfo):
    vocab_size: Annotated[int, Field(ge=1, le=1 << 22)]
    eos_id: Annotated[int, Field(ge=0)]


class SourceRecord(_Loose):
    path: str | None = None
    sha256: str | None = None
    license: str | None = None


class RunInfo(_Loose):
    """``RUN/gencraft.json``."""

    format: Annotated[int, Field(ge=1)] = 1
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
    run_id: str | None = None
    model: dict[str, Any] = {}
    train: dict[str, Any] = {}
    tokenizer: TokenizerInfo | None = None
    data: dict[str, Any] | None = None
    metrics: dict[str, Any] = {}
    model_digest: Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{64})?$")] | None = None


class CheckpointState(_Loose):
    """``RUN/checkpoints/last/state.json`` (the fields every loop's resume reads)."""

    kind: str
    step: Count
    model: dict[str, Any]
    train: dict[str, Any]
    train_time_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    model_config = ConfigDict(extra="allow", strict=False, protected_namespaces=())  # ints for floats are fine


class SplitInfo(_Loose):
    documents: Count = 0
    tokens: Count
    chars: Count = 0


class DatasetManifest(_Loose):
    """``datasets/NAME/manifest.json`` of a text dataset."""

    format: Annotated[int, Field(ge=1)] = 1
    sources: list[SourceRecord] = []
    tokenizer: DatasetTokenizer
    splits: dict[Literal["train", "val"], SplitInfo] = {}
    dtype: Literal["uint16", "uint32"]
    digest: str = ""


class ImageDatasetManifest(_Loose):
    """``datasets/NAME/manifest.json`` of an image dataset."""

    kind: Literal["images"]
    images: Count | None = None
    classes: list[str] = []
    sources: list[SourceRecord] = []
    digest: str | None = None


class LibraryRow(BaseModel):
    """One row of the content library as read back (``library.item_dict``)."""

    model_config = ConfigDict(extra="allow", strict=True, protected_namespaces=())
    id: int
    kind: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    model: str
    prompt: str
    text: str | None
    media_type: str
    parameters: dict[str, Any]
    manifest: dict[str, Any] | None
    guard: dict[str, Any] | None
    rating: Literal[-1, 0, 1]
    note: str


def _loc(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err.get("loc", ())) or "(top level)"


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid")).replace("Input should be", "must be")
    value = err.get("input")
    if err.get("type") == "missing":
        return "missing"
    shown = repr(value)
    return f"{msg} (got {shown[:60] + '...' if len(shown) > 60 else shown})"


def validate_data(data: Any, model: type[M], where: str | os.PathLike[str],
                  error: type[GencraftError] = RunError) -> M:
    """``data`` checked against ``model``; the first problem is one ``error`` naming ``where`` and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        more = len(e.errors()) - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise error(f"{os.fspath(where)}: field {_loc(first)}: {_message(first)}{extra}") from None


def read_json(path: str | os.PathLike[str], model: type[M] | None = None, *,
              error: type[GencraftError] = RunError, hint: str = "") -> Any:
    """Read a JSON file gencraft wrote: unreadable, not JSON, too deep, or not of ``model``'s shape
    is one ``error`` naming the file (``hint`` says what to do). Returns the parsed data as a dict
    (validated; the model's defaults are not filled in, so callers keep reading a plain dict)."""
    p = Path(path)
    tail = f"; {hint}" if hint else ""
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{p}: missing{tail}") from None
    except UnicodeDecodeError:
        raise error(f"{p}: not UTF-8 text{tail}") from None
    except OSError as e:
        raise error(f"{p}: cannot be read ({e.strerror}){tail}") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise error(f"{p}: nested more than {MAX_JSON_DEPTH} levels deep{tail}") from None
    except json.JSONDecodeError as e:
        raise error(f"{p}: not valid JSON ({e}){tail}") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise error(f"{p}: nested more than {MAX_JSON_DEPTH} levels deep{tail}")
    if model is not None:
        if not isinstance(data, dict):
            raise error(f"{p}: expected a JSON object, got {type(data).__name__}{tail}")
        validate_data(data, model, p, error)
    return data

"""``MODEL_CARD.md``: what a run was trained on (sources and licenses), how well, how, and for what."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _origin(info: dict[str, Any]) -> str:
    base, adapter = info.get("base"), info.get("adapter")
    if not base:
        return "trained from scratch"
    if adapter and adapter.get("objective") == "dpo":
        return (f"preference adapter (LoRA rank {adapter.get('r')}, DPO with beta {adapter.get('beta')}: outputs "
                "rated up preferred to outputs rated down) trained on top of a base model")
    if adapter:
        return (f"adapter ({adapter.get('method', 'lora').upper()}, rank {adapter.get('r')}, alpha "
                f"{adapter.get('alpha')}) trained on top of a base model")
    return "fine-tuned from a base model (every weight)"


def _base_section(info: dict[str, Any], data_licenses: list[str]) -> list[str]:
    """What the run was fine-tuned from, and the licenses that bind its output (base's and data's)."""
    base = info.get("base")
    if not base:
        return []
    base_lic = base.get("licenses") or ["unknown"]
    lines = [
        "## Base model",
        "",
        f"Fine-tuned from `{base.get('spec', '')}` ({base.get('kind', '?')}"
        + (f", {base['model_type']}" if base.get("model_type") else "")
        + f") at `{base.get('path', '')}`, weights sha256 `{base.get('sha256', '')}`.",
        f"The base was trained on data under: {', '.join(base_lic)}; this run adds data under: "
        f"{', '.join(data_licenses) if data_licenses else 'none recorded'}. Output is bound by both.",
        "",
    ]
    if info.get("adapter"):
        a = info["adapter"]
        lines += [f"This run holds only the adapter (`{a.get('file', '')}`, {a.get('format', '')} format, "
                  f"targets {', '.join(a.get('targets', []))}, {len(a.get('modules', []))} layers): it needs "
                  "the base above, with exactly those weights, to load.", ""]
    return lines


def model_card(info: dict[str, Any]) -> str:
    """Render the model card of a run from its ``gencraft.json`` contents."""
    kind, m, t = info["kind"], info.get("model", {}), info.get("train", {})
    data, metrics = info.get("data", {}), info.get("metrics", {})
    sources = data.get("sources", [])
    licenses = sorted({s.get("license") or "unknown" for s in sources})
    lines = [
        f"# Model card: {info.get('name', 'gencraft run')}",
        "",
        f"A {kind.upper()} language model {_origin(info)} with gencraft {info.get('gencraft_version', '')} "
        f"(run id `{info.get('run_id', '')}`, created {info.get('created', '')}).",
        "",
        *_base_section(info, licenses),
        "## Data",
        "",
        f"Dataset `{data.get('dataset', '')}` (manifest digest `{data.get('manifest_digest', '')}`), "
        f"tokenizer: {info.get('tokenizer', {}).get('kind', '?')} with "
        f"{info.get('tokenizer', {}).get('vocab_size', '?')} tokens.",
        "",
        "| source | sha256 | license |",
        "| --- | --- | --- |",
    ]
    for s in sources:
        lines.append(f"| {s.get('path', '')} | `{str(s.get('sha256', ''))[:16]}…` | {s.get('license') or 'unknown'} |")
    if not sources:
        lines.append("| (none recorded) | | |")
    lines += [
        "",
        f"Licenses of the training data: {', '.join(licenses) if licenses else 'none recorded'}. "
        "Generated text can reproduce training text; its use is bound by these licenses.",
        "",
        "## Metrics (validation split)",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    for key in ("best_val_loss", "val_ppl", "val_bpc", "step", "tokens_seen", "train_time_s", "stopped"):
        if key in metrics:
            lines.append(f"| {key} | {_fmt(metrics[key])} |")
    lines += [
        "",
        "## Model",
        "",
        "| field | value |",
        "| --- | --- |",
        *(f"| {k} | {_fmt(v)} |" for k, v in m.items()),
        "",
        "## Training configuration",
        "",
        "| field | value |",
        "| --- | --- |",
        *(f"| {k} | {_fmt(v)} |" for k, v in t.items()),
        "",
        "## Intended use",
        "",
        "Drafting and ideation in the style of the training material: generating text to be read, "
        "edited and selected by a person. Load it with `gencraft generate` or `gencraft.load(run)`.",
        "",
        "## Limitations",
        "",
        "- A small model trained on a small corpus: it imitates surface style, does not know facts, "
        "and its output can be incoherent, wrong or offensive.",
        "- It can repeat passages of its training data verbatim; check output against the sources "
        "(gencraft's memorization guard) before publishing it.",
        "- It only knows the characters/tokens of its training data and the language(s) in it.",
        "",
    ]
    return "\n".join(lines)

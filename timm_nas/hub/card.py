"""The model card (``README.md``) of an exported folder, built with ``huggingface_hub``'s ``ModelCard``.

A family's template ``hub_cards/<family>.md`` (``generic.md`` for other models) is a model card itself: its YAML
front matter holds the family's fixed metadata (``pipeline_tag``, ``tags``, the default ``license``), read with
``ModelCard``; its body is a Jinja2 template. :func:`render_card` merges the metadata of one export into a
``ModelCardData`` (``library_name``, tags, license, datasets, ``base_model``, and the ``model-index`` of measured
results) and renders the body with ``ModelCard.from_template``.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable, Mapping, Sequence

from ..version import __version__
from ._common import MARKER_KEY, PIP_NAME, REPO_ID_PLACEHOLDER, WEIGHTS_NAME, json_native, versions

__all__ = ["CARD_KEYS", "render_card"]

#: Keys accepted in :func:`~timm_nas.hub.export`'s ``card`` mapping.
CARD_KEYS = ("name", "description", "provenance", "metrics", "datasets", "license", "notes", "repo_id",
             "base_model")

# The card's front matter: ModelCard.from_template passes ModelCardData.to_yaml() as ``card_data``.
_FRONT_MATTER = "---\n{{ card_data }}\n---\n"
# The Hub's repo id syntax (namespace/name), for repo_id and base_model.
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


# ------------------------------------------------------------------------------------------------ card input
def check_card(card: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate :func:`~timm_nas.hub.export`'s ``card`` mapping and return a normalised copy."""
    if card is None:
        return {}
    if not isinstance(card, Mapping):
        raise ValueError(f"card must be a dict with keys {list(CARD_KEYS)}, got {type(card).__name__}")
    unknown = sorted(set(card) - set(CARD_KEYS))
    if unknown:
        raise ValueError(f"unknown card keys {unknown}; allowed keys: {list(CARD_KEYS)}")
    out: dict[str, Any] = {}
    for key in ("name", "description", "license", "notes", "repo_id"):
        if card.get(key) is not None:
            if not isinstance(card[key], str) or not card[key].strip():
                raise ValueError(f"card[{key!r}] must be a non-empty string, got {card[key]!r}")
            out[key] = card[key].strip()
    if "repo_id" in out and not _REPO_ID.fullmatch(out["repo_id"]):
        raise ValueError(f"card['repo_id'] must look like 'namespace/name', got {out['repo_id']!r}")
    for key, what in (("datasets", "dataset names"), ("base_model", "Hub model ids ('namespace/name')")):
        if card.get(key) is None:
            continue
        names = [card[key]] if isinstance(card[key], str) else card[key]
        if not isinstance(names, (list, tuple)) or not all(isinstance(d, str) and d for d in names) or (
                key == "base_model" and not all(_REPO_ID.fullmatch(d) for d in names)):
            raise ValueError(f"card[{key!r}] must be a list of {what}, got {card[key]!r}")
        out[key] = list(names)
    if card.get("provenance") is not None:
        if not isinstance(card["provenance"], Mapping):
            raise ValueError("card['provenance'] must be a dict (method, space, constraints, seed, score, ...)")
        prov = json_native(dict(card["provenance"]))
        try:
            json.dumps(prov)
        except (TypeError, ValueError) as e:
            raise ValueError(f"card['provenance'] must hold JSON-native values: {e}") from e
        out["provenance"] = prov
    if card.get("metrics") is not None:
        metrics = card["metrics"]
        if not isinstance(metrics, Mapping):
            raise ValueError("card['metrics'] must be a dict of metric name -> value, with an optional 'dataset'")
        values: dict[str, float] = {}
        dataset = metrics.get("dataset")
        if dataset is not None and (not isinstance(dataset, str) or not dataset):
            raise ValueError(f"card['metrics']['dataset'] must be a dataset name, got {dataset!r}")
        for name, value in metrics.items():
            if name == "dataset":
                continue
            value = json_native(value)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"card['metrics'][{name!r}] must be a finite number, got {value!r}")
            values[str(name)] = value
        if not values:
            raise ValueError("card['metrics'] holds no metric values")
        out["metrics"] = values
        out["metrics_dataset"] = dataset or (out.get("datasets") or [None])[0]
        if out["metrics_dataset"] is None:
            raise ValueError("card['metrics'] needs the dataset they were measured on: add 'dataset' to the metrics "
                             "or card['datasets']")
    return out


# ---------------------------------------------------------------------------------------------------- template
def _template(family: str | None) -> tuple[dict[str, Any], str]:
    """The family template's metadata (as a ``ModelCardData`` dict) and its Jinja2 body. A family without a
    template of its own (one registered from outside timm-nas) gets ``generic.md``."""
    from huggingface_hub import ModelCard

    from .._resources import data_dir

    folder = data_dir("hub_cards")
    path = folder / f"{family}.md" if family else folder / "generic.md"
    if not path.is_file():
        path = folder / "generic.md"
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise ValueError(f"card template {path} must start with YAML front matter between '---' lines")
    template = ModelCard(text)
    return template.data.to_dict(), template.text


def _check_variables(body: str, known: Iterable[str], family: str | None) -> None:
    """Refuse a template that uses a variable the card does not fill (Jinja2 would render it as '')."""
    import jinja2
    import jinja2.meta

    try:
        used = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(body))
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"card template {family or 'generic'}.md is not a valid Jinja2 template (body line "
                         f"{e.lineno}: {e.message}); write literal braces inside {{% raw %}} ... {{% endraw %}}") from e
    unknown = sorted(used - set(known))
    if unknown:
        raise ValueError(f"card template {family or 'generic'}.md uses unknown variables {unknown}; known: "
                         f"{sorted(known)}")


# ---------------------------------------------------------------------------------------------------- sections
def _fmt_count(n: int | float, unit: str = "") -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n:g} {unit}".strip()


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _arch_section(config: Mapping[str, Any], architecture: tuple[Mapping[str, Any], str] | None) -> str:
    marker = config.get(MARKER_KEY) or {}
    arch = config["architecture"]
    model_args = config.get("model_args") or {}
    arg = marker.get("arch_arg")
    cfg: Any = None
    where = ""
    if architecture is not None:
        cfg, where = architecture
    elif arg and isinstance(model_args.get(arg), Mapping):
        cfg, where = model_args[arg], f'`model_args["{arg}"]` in `config.json`'
    other = {k: v for k, v in model_args.items() if k != arg}
    lines = [f"timm architecture: `{arch}`."]
    if other:
        lines += ["", _table(("argument", "value"), sorted(other.items()))]
    if not isinstance(cfg, Mapping):
        lines += ["", "The architecture is fixed by the timm name: it has no separate architecture config."]
        return "\n".join(lines)
    # Lists with one value per layer (their length is the config's int depth) form a per-layer table; every
    # other field is one row (long nested values, e.g. a DARTS cell, are left to the JSON below).
    depth = cfg.get("depth")
    per_layer = [k for k, v in cfg.items() if isinstance(depth, int) and isinstance(v, list) and len(v) == depth
                 and all(not isinstance(x, (list, dict)) for x in v)]
    rows = [(k, v if len(_cell(v)) <= 120 else "(see the JSON below)") for k, v in cfg.items() if k not in per_layer]
    lines += ["", f"The architecture config, {where}:"]
    if rows:
        lines += ["", _table(("field", "value"), rows)]
    if per_layer:
        lines += ["", _table(("layer", *per_layer), ([i, *(cfg[k][i] for k in per_layer)] for i in range(depth)))]
    lines += ["", "```json", json.dumps(cfg, indent=1), "```"]
    return "\n".join(lines)


def _cost_section(cost: Mapping[str, Any] | None) -> str:
    if not cost:
        return "Not counted for this card."
    size = "x".join(str(s) for s in cost.get("input_size", [])[1:])
    lines = [f"- Parameters: {_fmt_count(cost['params'])} ({cost['params']:,}), counted on the model "
             "(`timm_nas.cost.real_params`)."]
    if cost.get("macs") is not None:
        lines.append(f"- MACs: {_fmt_count(cost['macs'])} ({cost['macs']:,}) per {size} image, "
                     f"{cost.get('macs_source', '')}.")
    else:
        lines.append(f"- MACs: {cost.get('macs_note', 'not counted')}.")
    return "\n".join(lines)


def _onnx_section() -> list[str]:
    return [
        "",
        "`model.onnx` is the same model for deployment (ONNX, dynamic batch; `pip install onnxruntime`):",
        "",
        "```python",
        "import numpy as np",
        "import onnxruntime",
        "",
        'session = onnxruntime.InferenceSession("model.onnx")',
        "name = session.get_inputs()[0].name",
        "batch = np.random.randn(1, *session.get_inputs()[0].shape[1:]).astype(np.float32)  # preprocessed images",
        "logits = session.run(None, {name: batch})[0]",
        "```",
    ]


def _usage_section(repo_id: str, onnx: bool = False) -> str:
    # push() rewrites the create_model line's repo id (see timm_nas.hub.push): keep its shape
    return "\n".join([
        "```python",
        "import timm_nas  # noqa: F401  registers the timm-nas architectures with timm (pip install timm-nas)",
        "import timm",
        "import torch",
        "",
        f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()',
        "data_config = timm.data.resolve_model_data_config(model)",
        "transform = timm.data.create_transform(**data_config, is_training=False)  # for PIL images",
        "with torch.no_grad():",
        '    logits = model(torch.randn(1, *data_config["input_size"]))',
        "print(logits.shape)",
        "```",
        "",
        "A local copy of this folder loads the same way with `timm.create_model(\"local-dir:/path/to/folder\", "
        "pretrained=True)`, and `timm_nas.create_model(...)` is the same call with the import guaranteed. "
        "Without `import timm_nas`, timm only reports `Unknown model`.",
        *(_onnx_section() if onnx else []),
    ])


# ------------------------------------------------------------------------------------------------------ render
def render_card(config: Mapping[str, Any], card: Mapping[str, Any] | None = None, *,
                cost: Mapping[str, Any] | None = None,
                architecture: tuple[Mapping[str, Any], str] | None = None, onnx: bool = False) -> str:
    """Render a folder's ``README.md`` from its ``config.json`` content and card information.

    Args:
        config: the ``config.json`` dict written by :func:`~timm_nas.hub.export` (``architecture``,
            ``model_args``, ``pretrained_cfg`` and the ``timm_nas`` marker).
        card: card information as in :func:`~timm_nas.hub.export` (validated here too).
        cost: ``params``, ``input_size`` and ``macs`` with ``macs_source`` (or ``macs_note``), as computed by
            :func:`~timm_nas.hub.export`; omitted from the card when ``None``.
        architecture: ``(config dict, where it comes from)`` for the architecture table; default: the marker's
            ``arch_arg`` entry of ``model_args``, if any.
        onnx: the folder holds ``model.onnx``: the card says how to run it.

    Returns:
        The card: YAML front matter (``library_name: timm``, tags with ``timm-nas`` and the family, license,
        datasets, ``base_model`` when given, and a ``model-index`` when metrics are given) and the Markdown body
        of the family's template.

    Raises:
        ValueError: ``card`` is malformed, or the template uses a variable the card does not fill.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    info = check_card(card)
    marker = config.get(MARKER_KEY) or {}
    family = marker.get("family")
    arch = config["architecture"]
    name = info.get("name") or arch
    meta, body = _template(family)

    meta["library_name"] = "timm"
    meta["tags"] = list(dict.fromkeys([*(meta.get("tags") or []), "timm", "timm-nas", *([family] if family else [])]))
    # the card's, else the model's own pretrained_cfg's, else the family's default (its original code's license)
    license_ = info.get("license") or (config.get("pretrained_cfg") or {}).get("license") or meta.get("license")
    if license_:
        meta["license"] = license_
    datasets = list(info.get("datasets") or [])
    if info.get("metrics_dataset") and info["metrics_dataset"] not in datasets:
        datasets.append(info["metrics_dataset"])
    if datasets:
        meta["datasets"] = datasets
    if info.get("base_model"):
        meta["base_model"] = info["base_model"] if len(info["base_model"]) > 1 else info["base_model"][0]
    if info.get("metrics"):
        ds = info["metrics_dataset"]
        meta["model_name"] = name
        meta["eval_results"] = [
            EvalResult(task_type="image-classification", task_name="Image Classification", dataset_type=ds,
                       dataset_name=ds, metric_type=k, metric_value=v, metric_name=k)
            for k, v in info["metrics"].items()]
    card_data = ModelCardData(**meta)

    if info.get("metrics"):
        results = _table(("metric", "value", "dataset"),
                         ((k, v, info["metrics_dataset"]) for k, v in info["metrics"].items()))
    else:
        results = "No measured result is recorded for these weights."
    if info.get("provenance"):
        provenance = _table(("key", "value"), info["provenance"].items())
    else:
        provenance = "These weights do not come from a recorded architecture search."
    weights_note = "" if marker.get("weights", WEIGHTS_NAME) else (
        "\n\n**This folder holds the architecture only, without weights**: load it with `pretrained=False`.")
    fields = dict(
        title=name,
        summary=(info.get("description") or f"`{arch}`, a timm model made with timm-nas.") + weights_note,
        install=f"pip install '{PIP_NAME}>={marker.get('version', __version__)}'",
        usage=_usage_section(info.get("repo_id") or REPO_ID_PLACEHOLDER, onnx=onnx),
        architecture=_arch_section(config, architecture),
        cost=_cost_section(cost),
        results=results,
        provenance=provenance,
        notes=info.get("notes") or "",
        versions=_table(("package", "version"), (marker.get("versions") or versions()).items()),
    )
    # from_template also passes the metadata's keys (license, tags, ...) to the template
    _check_variables(body, {*fields, *card_data.to_dict(), "card_data"}, family)
    rendered = ModelCard.from_template(card_data, template_str=_FRONT_MATTER + body, **fields)
    rendered.text = re.sub(r"\n{3,}", "\n\n", rendered.text).strip() + "\n"  # an empty section leaves no gap
    return str(rendered)

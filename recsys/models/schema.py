"""JSON schemas of the model configs (pydantic's ``TypeAdapter`` over the config dataclasses) and
the settings reference ``docs/configs.md`` rendered from them (``scripts/config_reference.py``;
``tests/unit/test_config_reference.py`` checks the page is current). Validation stays in each
config's ``validate()``: see docs/configs.md, "Why the configs are dataclasses"."""

from __future__ import annotations

from typing import Any

from recsys.models.registry import registered_models


def config_schema(name: str) -> dict[str, Any]:
    """The JSON schema (types and defaults) of the config of the registered model `name`."""
    from pydantic import TypeAdapter

    from recsys.models.registry import get_model

    return TypeAdapter(get_model(name).Config).json_schema()


def _type(prop: dict[str, Any]) -> str:
    if "anyOf" in prop:
        return " or ".join(_type(p) for p in prop["anyOf"])
    if "$ref" in prop:
        return "a model config (`{model, config}`)"
    kind = prop.get("type", "any")
    if kind == "array":
        items = prop.get("prefixItems") or [prop.get("items", {})]
        return f"list of {_type(items[0])}" if items and items[0] else "list"
    return {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "null": "null"}.get(kind, kind)


def _default(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return "(required)"
    value = prop["default"]
    if isinstance(value, dict) and set(value) == {"model", "config"}:
        return value["model"]
    return f"`{value!r}`" if not isinstance(value, (dict, list)) or len(repr(value)) < 40 else "see the class"


def reference_markdown() -> str:
    """One table per registered model: setting, type, default, in the config's field order."""
    out = []
    for name, klass in registered_models().items():
        schema = config_schema(name)
        out.append(f"### `{name}` ({klass.__module__}.{klass.__name__}; {' / '.join(klass.contracts())})\n")
        out.append("| setting | type | default |\n|---|---|---|")
        for key, prop in schema["properties"].items():
            out.append(f"| `{key}` | {_type(prop)} | {_default(prop)} |")
        out.append("")
    return "\n".join(out)

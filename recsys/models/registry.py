"""Model names -> classes: ``get_model(name)``, ``build(name, **config)``.

Each model class registers itself where it is defined (``@register_model``), so this module
imports no model family: :mod:`recsys.models.base` can look names up here (nested configs,
saved models) without an import cycle. The families are imported by name on the first lookup.
"""

from __future__ import annotations

import difflib
from importlib import import_module
from typing import Any, TypeVar

from recsys.errors import ConfigError

# Every package that defines registered models; a new family is added here once.
FAMILIES = (
    "recsys.models.autoencoders",
    "recsys.models.baselines",
    "recsys.models.sequential",
    "recsys.models.local",
    "recsys.models.tail",
    "recsys.models.meta",
    "recsys.models.multi_interest",
)

_MODELS: dict[str, type] = {}  # name -> a recsys.models.base.Model subclass
_loaded = False
M = TypeVar("M", bound=type)


def register_model(klass: M) -> M:
    """Class decorator: register `klass` under its ``name`` (one class per name)."""
    name = klass.name
    if name in _MODELS and _MODELS[name] is not klass:
        raise ConfigError(f"model name {name!r} is registered twice ({_MODELS[name].__qualname__}, {klass.__qualname__})")
    _MODELS[name] = klass
    return klass


def _load_families() -> None:
    global _loaded
    if not _loaded:
        for family in FAMILIES:
            import_module(family)
        _loaded = True


def _family_index(klass: type) -> int:
    module = klass.__module__
    return next((i for i, f in enumerate(FAMILIES) if module == f or module.startswith(f + ".")), len(FAMILIES))


def registered_models() -> dict[str, type]:
    """Every registered model, name -> class: by family (``FAMILIES`` order), then in the order the
    family's package defines them -- the same whichever module was imported first."""
    _load_families()
    order = {name: i for i, name in enumerate(_MODELS)}
    return dict(sorted(_MODELS.items(), key=lambda kv: (_family_index(kv[1]), order[kv[0]])))


def __getattr__(name: str):  # ``registry.MODELS``: the full mapping, families loaded
    if name == "MODELS":
        return registered_models()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_model(name: str) -> type:
    """The model class registered as `name`; ConfigError (with the closest name) otherwise."""
    models = registered_models()
    if name in models:
        return models[name]
    close = difflib.get_close_matches(str(name).lower(), models, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown model {name!r}.{hint} Valid names: {', '.join(sorted(models))}")


def build(name: str, **config: Any) -> Any:
    """An unfitted model `name` with `config` overriding its defaults (unknown keys -> ConfigError)."""
    return get_model(name)(**config)


def model_of_config(config_class: type) -> str:
    """The registered name whose Config is exactly `config_class` (for nested configs)."""
    for name, klass in registered_models().items():
        if klass.Config is config_class:
            return name
    raise ConfigError(f"{config_class.__name__} is not the config of a registered model")

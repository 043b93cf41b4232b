"""Stage settings: the params folder, YAML files deep-merged with a flow's ``--config``, comma lists.

Where params come from: ``$RECSYS_PARAMS_DIR`` when set, else the ``params/`` folder of the source
checkout the package runs from (an editable install, a flow's ``recsys`` symlink), else
``./params`` of the working directory. An installed wheel carries no params: point
``RECSYS_PARAMS_DIR`` at a copy of the repository's ``params/`` or pass full settings with
``--config cfg FILE``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Mapping

from recsys.errors import ConfigError

_SOURCE_PARAMS = Path(__file__).resolve().parents[2] / "params"


def default_output_root() -> Path:
    """Where stages write files: ``$RECSYS_OUTPUT_DIR`` or ``./outputs``."""
    return Path(os.environ.get("RECSYS_OUTPUT_DIR") or "outputs")


def params_dir() -> Path:
    """The folder stage settings are read from (see the module docstring)."""
    env = os.environ.get("RECSYS_PARAMS_DIR")
    if env:
        return Path(env)
    if _SOURCE_PARAMS.is_dir():
        return _SOURCE_PARAMS
    return Path.cwd() / "params"


def check_dataset(dataset: str) -> None:
    """An unknown dataset name stops here, listing the registered ones (before any settings lookup)."""
    from recsys.data import get_info

    get_info(dataset)


def params_path(name: str) -> Path:
    """``params_dir() / name``."""
    return params_dir() / name


def data_options(data_path: str | None = None, columns: str | None = None, sep: str | None = None) -> dict:
    """Loader options of a flow's ``--data-path FILE --columns user=uid,item=iid --sep ';'`` (for
    the ``csv`` dataset): ``{"path": ..., "columns": {...}, "sep": ...}``, only what was given.
    Numbers are positions (``--columns user=0,item=1,rating=2``): the file is then read without a
    header row."""
    out: dict[str, Any] = {}
    if data_path:
        out["path"] = str(data_path)
    if columns:
        pairs = {}
        for item in comma_list(columns):
            ours, _, theirs = item.partition("=")
            if not theirs or ours.strip() not in ("user", "item", "rating", "timestamp"):
                raise ConfigError(f"--columns {columns!r}: expected ours=theirs pairs such as "
                                  f"user=uid,item=iid,rating=stars,timestamp=ts (ours: user, item, rating, timestamp)")
            theirs = theirs.strip()
            # a number is a 0-based field position: a file without a header row (user=0,item=1)
            pairs[ours.strip()] = int(theirs) if theirs.isdigit() else theirs
        kinds = {isinstance(v, int) for v in pairs.values()}
        if len(kinds) > 1:
            raise ConfigError(f"--columns {columns!r}: give every column by header name or every one by 0-based "
                              f"position (user=0,item=1 for a file without a header), not a mix")
        out["columns"] = pairs
    if sep:
        out["sep"] = {"\\t": "\t", "tab": "\t"}.get(sep, sep)
    return out


def with_data_options(settings: Mapping[str, Any] | None, data_path: str | None = None, columns: str | None = None,
                      sep: str | None = None) -> dict:
    """`settings` (a flow's ``--config``, a notebook's overrides, a resolved stage section) with the
    loader options of ``--data-path / --columns / --sep`` merged under ``dataset:``."""
    return deep_merge(dict(settings or {}), {"dataset": data_options(data_path, columns, sep)})


def stage_params_file(prefix: str, dataset: str, log=print, override: Mapping[str, Any] | None = None,
                      section: str = "methods") -> Path:
    """``<params>/<prefix>_<dataset>.yaml``, or the stage's default profile
    ``<params>/<prefix>_default.yaml`` for a dataset without one (a user's csv), saying so; not
    when the override (``--config cfg FILE``) brings its own `section` (its methods are the run's)."""
    path = params_path(f"{prefix}_{dataset}.yaml")
    default = params_path(f"{prefix}_default.yaml")
    if not path.exists() and default.exists() and not (override or {}).get(section):
        log(f"no {path.name} for dataset '{dataset}': using the default profile {default}")
        return default
    return path


def merged_settings(path: Path, override: Mapping[str, Any] | None) -> dict:
    """The YAML at `path` (empty if it does not exist) deep-merged with `override`."""
    import yaml

    base = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    # A JSON round trip turns Metaflow's immutable ConfigValue (a dict subclass) into plain data.
    return deep_merge(base, json.loads(json.dumps(override or {})))


def comma_list(text: str | None) -> list[str]:
    """'a, b' -> ['a', 'b']; empty or None -> []."""
    return [t.strip() for t in str(text or "").split(",") if t.strip()]


def load_stage_settings(dataset: str, stage: str, prefix: str, protocol: str, why: str, keys: set[str],
                        mappings: tuple[str, ...], override: Mapping[str, Any] | None,
                        required: str = "methods") -> dict:
    """``<params>/<prefix>_<dataset>.yaml`` (or the stage's default profile) deep-merged with
    `override`, for a stage that runs one `protocol` (`why`: whose protocol it is) and needs a
    `required` section (``methods:``, BaM's ``models:``); unknown top-level keys and non-mapping
    `mappings` sections stop with a ConfigError naming them."""
    check_dataset(dataset)
    path = stage_params_file(prefix, dataset, override=override, section=required)
    settings = merged_settings(path, override)
    if path.name.endswith("_default.yaml"):
        print(f"{stage}-stage settings used: {json.dumps(settings, sort_keys=True)}")
    if not settings.get(required):
        raise ConfigError(f"no {stage}-stage settings for dataset '{dataset}': write {path} or pass --config cfg FILE "
                          f"with a '{required}:' section (see params/{prefix}_amazon-digital-music.yaml)")
    unknown = set(settings) - keys
    if unknown:
        raise ConfigError(f"{prefix} settings: unknown key(s) {sorted(unknown)}; expected some of {sorted(keys)}")
    settings.setdefault("protocol", protocol)
    if settings["protocol"] != protocol:
        raise ConfigError(f"the {stage} stage evaluates on {protocol} ({why} protocol), got {settings['protocol']!r}")
    for key in mappings:
        if not isinstance(settings.get(key) or {}, Mapping):
            raise ConfigError(f"{prefix} settings: {key} must be a mapping of name -> settings")
    return settings


def deep_merge(base: dict, override: Mapping[str, Any]) -> dict:
    """A copy of `base` with `override` merged in, mappings key by key, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out

"""The Parameters every flow shares, declared once, in two base flow classes without steps.

* :class:`DatasetFlow`: ``--dataset``, ``--data-dir``, ``--output-dir`` (every flow);
* :class:`CsvDatasetFlow`: those and ``--data-path``, ``--columns``, ``--sep``, your own
  interaction file with ``--dataset csv`` (every flow but ``ddp_flow.py``).

A flow subclasses one of them and declares only its own Parameters, its ``cfg`` Config and its
steps. Metaflow 2.19 finds Parameters with ``dir(cls)``, so inherited ones are command-line options,
run artifacts and deployment parameters like the flow's own (``run --help`` lists them all in
alphabetical order either way); flow decorators and Configs of a base class are inherited too
(``metaflow/flowspec.py``, ``FlowSpecMeta._init_attrs``), and a base class needs no steps.
``metaflow.Runner`` takes the flow class defined in the flow file itself, never these, because
they live in this module.

Help texts that name a flow's own folders come from the flow, not from a re-declared Parameter:

* ``_output_under = "tall/<dataset>/<run id>"``: ``--output-dir``'s help says files go there by
  default (under ``$RECSYS_OUTPUT_DIR`` or ``./outputs``);
* ``_help = {"dataset": "..."}``: replaces the help of any shared Parameter (attribute name).

:meth:`DatasetFlow.__init_subclass__` then gives the flow class its own copy of that Parameter,
made by :func:`shared` from the one specification here (same option name, default and type), with
that help. The names start with ``_`` so Metaflow does not store them as run artifacts.
"""

from __future__ import annotations

from metaflow import Config, FlowSpec, Parameter

DEFAULT_DATASET = "amazon-digital-music"
OUTPUT_ROOT = "$RECSYS_OUTPUT_DIR or ./outputs"

# attribute -> the Parameter's option name, default and help (type: that of the default, str)
_SPECS = {
    "dataset": ("dataset", DEFAULT_DATASET, "registered dataset name (see README, 'Datasets')"),
    "data_dir": ("data-dir", "",
                 "folder holding the dataset's files (default: $RECSYS_DATA_HOME, then the cache)"),
    "output_dir": ("output-dir", "", f"where files go (default: under {OUTPUT_ROOT})"),
    "data_path": ("data-path", "", "your interaction file, with --dataset csv"),
    "columns": ("columns", "",
                "column names of --data-path: user=uid,item=iid,rating=stars,timestamp=ts"),
    "sep": ("sep", "", "field separator of --data-path (default ','; 'tab' for tabs)"),
}


def shared(attribute: str, help: str | None = None) -> Parameter:
    """The shared Parameter stored as ``attribute``, with its own help or ``help``."""
    name, default, text = _SPECS[attribute]
    return Parameter(name, default=default, help=help or text)


def stage_config(stage: str) -> Config:
    """A training flow's ``--config cfg FILE``: a YAML merged over ``params/<stage>_<dataset>.yaml``."""
    return Config("cfg", default_value={}, parser="yaml.safe_load",
                  help=f"YAML merged over params/{stage}_<dataset>.yaml (same layout)")


def output_help(under: str) -> str:
    """``--output-dir``'s help for a flow whose files go to ``<output root>/<under>`` by default."""
    return f"where files go (default: {OUTPUT_ROOT}, under {under})"


class DatasetFlow(FlowSpec):
    """Base of every flow: ``--dataset``, ``--data-dir``, ``--output-dir``."""

    dataset = shared("dataset")
    data_dir = shared("data_dir")
    output_dir = shared("output_dir")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        helps = dict(own.get("_help", {}))
        if own.get("_output_under"):
            helps.setdefault("output_dir", output_help(own["_output_under"]))
        for attribute, text in helps.items():
            if attribute not in _SPECS or not isinstance(getattr(cls, attribute, None), Parameter):
                raise TypeError(f"{cls.__name__}._help: {attribute!r} is not a shared Parameter of its base class")
            setattr(cls, attribute, shared(attribute, text))


class CsvDatasetFlow(DatasetFlow):
    """Base of the flows that also read your own interaction file: ``--data-path``, ``--columns``,
    ``--sep`` (with ``--dataset csv``), on top of :class:`DatasetFlow`'s."""

    data_path = shared("data_path")
    columns = shared("columns")
    sep = shared("sep")

"""POSIT's parameter strings (seed 002's table), parsed into a typed record and printed back.

    ml20m_ease_lr2.00e+00_alr1.00e+00_wd8.00e-06_nstd1.50e+00_awd0.00e+00_ast2bmlp2_alossrecall_dist_onesFalse_lam1.00e+00_l2_itemarl_metric

fields, in order: dataset, learner (``ease``), ``lr`` (learner learning rate), ``alr`` (adversary
learning rate), ``wd`` (learner weight decay), ``nstd`` (adversary output scale), ``awd``
(adversary weight decay), ``ast`` (adversary structure: ``linear``, ``2mlpN``, ``2bmlpN``),
``aloss`` (advantage: ``recall`` or ``recall_dist``), ``ones`` (normalise the advantage by the
item's count), ``lam`` (weight scale lambda), the loss (``l2`` or ``bce``) and the method
(``itemarl_metric`` = POSIT). Numbers print as ``%.2e``, so a pasted string prints back identically.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from recsys.errors import ConfigError

_NUM = r"[-+]?\d+(?:\.\d+)?(?:e[-+]\d+)?"
# the prefixed fields between the learner and the loss, in order: (name, value pattern)
_PREFIXED = (("lr", _NUM), ("alr", _NUM), ("wd", _NUM), ("nstd", _NUM), ("awd", _NUM),
             ("ast", r"linear|2b?mlp\d+"), ("aloss", r"recall_dist|recall"), ("ones", r"True|False"), ("lam", _NUM))
_LOSS = r"l2|bce"
_PATTERN = re.compile(
    r"^(?P<dataset>[^_]+)_(?P<learner>[^_]+)" + "".join(rf"_{n}(?P<{n}>{v})" for n, v in _PREFIXED)
    + rf"_(?P<loss>{_LOSS})_(?P<method>[a-z][a-z0-9_]*)$"
)
FIELDS = ("dataset", "learner", "lr", "alr", "wd", "nstd", "awd", "ast", "aloss", "ones", "lam", "loss", "method")
EXAMPLE = ("ml20m_ease_lr2.00e+00_alr1.00e+00_wd8.00e-06_nstd1.50e+00_awd0.00e+00_ast2bmlp2_"
           "alossrecall_dist_onesFalse_lam1.00e+00_l2_itemarl_metric")
# upstream method tokens -> our method names
METHOD_ALIASES = {"itemarl_metric": "posit"}


@dataclass(frozen=True)
class ParamString:
    dataset: str
    learner: str
    lr: float
    alr: float
    wd: float
    nstd: float
    awd: float
    ast: str
    aloss: str
    ones: bool
    lam: float
    loss: str
    method: str

    @classmethod
    def parse(cls, text: str) -> "ParamString":
        """Parse a published parameter string; a malformed one names the first field that fails."""
        if not isinstance(text, str):
            raise ConfigError(f"a parameter string must be text, got {type(text).__name__}")
        text = text.strip()
        m = _PATTERN.match(text)
        if m is None:
            raise ConfigError(f"malformed parameter string {text!r}: {_first_problem(text)}; "
                              f"expected the layout of e.g. {EXAMPLE!r}")
        g = m.groupdict()
        return cls(dataset=g["dataset"], learner=g["learner"], lr=float(g["lr"]), alr=float(g["alr"]),
                   wd=float(g["wd"]), nstd=float(g["nstd"]), awd=float(g["awd"]), ast=g["ast"], aloss=g["aloss"],
                   ones=g["ones"] == "True", lam=float(g["lam"]), loss=g["loss"], method=g["method"])

    def format(self) -> str:
        """The string form (``%.2e`` numbers), identical to the published strings."""
        return (f"{self.dataset}_{self.learner}_lr{self.lr:.2e}_alr{self.alr:.2e}_wd{self.wd:.2e}"
                f"_nstd{self.nstd:.2e}_awd{self.awd:.2e}_ast{self.ast}_aloss{self.aloss}_ones{self.ones}"
                f"_lam{self.lam:.2e}_{self.loss}_{self.method}")

    __str__ = format

    @property
    def method_name(self) -> str:
        """Our name of the method (``itemarl_metric`` -> ``posit``)."""
        return METHOD_ALIASES.get(self.method, self.method)

    def to_dict(self) -> dict:
        return asdict(self)


def _first_problem(text: str) -> str:
    """Which field of a malformed string is wrong (checked left to right)."""
    parts = text.split("_")
    if len(parts) < 2:
        return "it has no '_'-separated fields"
    checks = [(n, rf"_{n}({v})_") for n, v in _PREFIXED] + [("loss", rf"_({_LOSS})_")]
    for name, pattern in checks:
        if not re.search(pattern, text):
            found = re.search(rf"_{name}([^_]*)", text)
            return f"field '{name}' is missing or invalid" + (f" (got {found.group(1)!r})" if found else "")
    return "the fields are out of order, or the dataset / learner / method part is malformed"

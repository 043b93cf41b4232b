"""POSIT parameter strings: the published ones parse and print back identically; bad ones stop clearly."""

from __future__ import annotations

import pytest

from recsys.errors import ConfigError
from recsys.models.tail import ParamString

PUBLISHED = [
    "ml20m_ease_lr2.00e+00_alr1.00e+00_wd8.00e-06_nstd1.50e+00_awd0.00e+00_ast2bmlp2_alossrecall_dist_onesFalse_lam1.00e+00_l2_itemarl_metric",
    "nflx_ease_lr1.00e+00_alr1.00e+00_wd5.00e-05_nstd1.00e+00_awd0.00e+00_ast2mlp50_alossrecall_dist_onesFalse_lam1.00e+00_l2_itemarl_metric",
    "msd_ease_lr4.00e+01_alr1.00e-01_wd1.00e-05_nstd5.00e-01_awd1.00e-05_ast2mlp2_alossrecall_onesTrue_lam1.00e+00_l2_itemarl_metric",
]


@pytest.mark.parametrize("text", PUBLISHED)
def test_published_strings_round_trip(text):
    p = ParamString.parse(" " + text + " ")
    assert p.format() == text and str(p) == text
    assert ParamString(**p.to_dict()).format() == text
    assert p.method_name == "posit" and p.learner == "ease"


def test_fields_are_typed():
    p = ParamString.parse(PUBLISHED[2])
    assert (p.dataset, p.lr, p.alr, p.wd, p.nstd, p.awd, p.ast, p.aloss, p.ones, p.lam, p.loss) == (
        "msd", 40.0, 0.1, 1e-5, 0.5, 1e-5, "2mlp2", "recall", True, 1.0, "l2")


@pytest.mark.parametrize("bad,field", [
    (PUBLISHED[0].replace("_lr2.00e+00", "_lrtwo"), "lr"),
    (PUBLISHED[0].replace("ast2bmlp2", "ast3mlp"), "ast"),
    (PUBLISHED[0].replace("alossrecall_dist", "alossndcg"), "aloss"),
    (PUBLISHED[0].replace("onesFalse", "onesMaybe"), "ones"),
    (PUBLISHED[0].replace("_l2_", "_l1_"), "loss"),
])
def test_malformed_strings_name_the_field(bad, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        ParamString.parse(bad)


def test_non_string_and_garbage():
    with pytest.raises(ConfigError, match="must be text"):
        ParamString.parse(3)
    with pytest.raises(ConfigError, match="malformed parameter string"):
        ParamString.parse("hello")

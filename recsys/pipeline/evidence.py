"""What a comparison rests on: per-user metric arrays kept beside every result, and the intervals
and paired tests every stage's table carries.

* A task writes its test users' metric values with :func:`save_per_user` (``per_user.npz``,
  compressed, its sha256 in the task's result under ``"per_user"``); :func:`load_per_user` checks
  the checksum before it hands the arrays back, so a comparison can be recomputed later, without
  retraining, and a changed or corrupt file is refused.
* :func:`write_run_arrays` gathers a run's per-user files into one ``per_user.npz`` beside its
  ``results.json`` (:func:`read_run_arrays` reads it back, checksum checked): the run folder alone
  is enough for the leaderboard across runs (``flows/compare_flow.py``).
* :func:`comparison` gives, per metric and method: the mean, a 95 % interval (over seeds where
  there are at least 3 that differ, else bootstrap over users) and, against the stage's reference method,
  the paired tests over users (Wilcoxon signed-rank and sign-flip randomization on the per-user
  values averaged over seeds) and over seeds (paired t-test where both have 3 or more seeds; the
  sign-flip test cannot reach p < 0.05 with fewer than 6 seeds), each Holm-adjusted across the
  methods of the table, with the effect sizes. ``significant`` needs every available test below
  alpha after adjustment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from recsys.errors import DataError

PER_USER_FILE = "per_user.npz"
ALPHA = 0.05
TABLE_RESAMPLES = 2000  # bootstrap / randomization draws per table cell (p resolution 1/2001)
MIN_SEEDS = 3           # intervals and tests over seeds from this many seeds on


@dataclass
class PerUser:
    """One evaluation's per-user values: ``users`` (ids, ascending) and ``metrics[name]`` aligned
    with them; ``groups`` (a label per user, e.g. the mainstream group) where the stage has one."""

    users: np.ndarray
    metrics: dict[str, np.ndarray]
    groups: np.ndarray | None = None


def method_of(key: Any) -> str:
    """The method of a results key: ``(method, seed)`` or ``method``."""
    return str(key[0]) if isinstance(key, tuple) else str(key)


def seed_of(key: Any, result: Mapping[str, Any] | None = None) -> int | None:
    if isinstance(key, tuple):
        return key[1]
    seed = (result or {}).get("seed")
    return None if seed is None else int(seed)


def _sha256(path: Path) -> str:
    from recsys.io import sha256_file

    return sha256_file(path)


def save_per_user(out_dir, users, metrics: Mapping[str, Any], *, groups=None, name: str = PER_USER_FILE) -> dict:
    """Write ``out_dir/name`` (compressed, atomically) and return its record for the result:
    ``{"path", "sha256", "n_users", "metrics"}``. Users are sorted; the arrays follow them."""
    from recsys.io import atomic_path

    users = np.asarray(users, dtype=np.int64).reshape(-1)
    order = np.argsort(users, kind="stable")
    arrays = {"users": users[order]}
    for key, values in metrics.items():
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.shape != users.shape:
            raise DataError(f"per-user metric {key!r}: {v.size} values for {users.size} users")
        arrays[f"metric:{key}"] = v[order]
    if groups is not None:
        arrays["groups"] = np.asarray(groups).astype(str).reshape(-1)[order]
    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return {"path": str(path.resolve()), "sha256": _sha256(path), "n_users": int(users.size),
            "metrics": sorted(metrics)}


def _read_npz(path: Path, sha256: str | None, what: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{what}: {path} is missing; re-run the task that wrote it")
    if sha256 is not None:
        actual = _sha256(path)
        if actual != sha256:
            raise DataError(f"{what}: {path} has sha256 {actual[:12]}..., the result records {sha256[:12]}...: "
                            f"the file changed or is corrupt; re-run the task that wrote it")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_per_user(record: Mapping[str, Any], *, what: str = "per-user file") -> PerUser:
    """The arrays of a :func:`save_per_user` record, after checking its sha256."""
    z = _read_npz(Path(record["path"]), record.get("sha256"), what)
    return PerUser(z["users"], {k.split(":", 1)[1]: v for k, v in z.items() if k.startswith("metric:")},
                   z.get("groups"))


def _run_key(method: str, seed: int | None) -> str:
    return f"{method}|{'' if seed is None else seed}"


def write_run_arrays(run_dir, results: Mapping[Any, Mapping[str, Any]]) -> dict | None:
    """One ``per_user.npz`` beside ``results.json`` holding every task's per-user arrays (key
    ``<method>|<seed>|<metric>``, ``...|users``, ``...|groups``); its record, or None when no
    result has per-user arrays."""
    from recsys.io import atomic_path

    arrays: dict[str, np.ndarray] = {}
    for key, result in results.items():
        record = (result or {}).get("per_user")
        if not record:
            continue
        pu = load_per_user(record, what=f"per-user file of {method_of(key)}")
        prefix = _run_key(method_of(key), seed_of(key, result))
        arrays[f"{prefix}|users"] = pu.users
        if pu.groups is not None:
            arrays[f"{prefix}|groups"] = pu.groups
        for m, v in pu.metrics.items():
            arrays[f"{prefix}|metric:{m}"] = v
    if not arrays:
        return None
    path = Path(run_dir) / PER_USER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return {"path": str(path.resolve()), "sha256": _sha256(path)}


def read_run_arrays(path, sha256: str | None = None) -> dict[tuple[str, int | None], PerUser]:
    """The arrays of :func:`write_run_arrays` by (method, seed), checksum checked."""
    z = _read_npz(Path(path), sha256, "run per-user file")
    out: dict[tuple[str, int | None], PerUser] = {}
    for k, v in z.items():
        method, seed, field = k.split("|", 2)
        key = (method, int(seed) if seed else None)
        pu = out.setdefault(key, PerUser(np.zeros(0, dtype=np.int64), {}))
        if field == "users":
            pu.users = v
        elif field == "groups":
            pu.groups = v
        else:
            pu.metrics[field.split(":", 1)[1]] = v
    return out


def beyond_metrics(result, train, ks) -> dict[str, float]:
    """The beyond-accuracy metrics (:mod:`recsys.metrics.beyond`) of a ranking result kept with its
    top-k, at the stage's cut-offs; catalogue coverage is ``catalog_coverage@k`` (the tail stage's
    ``coverage@k`` counts distinct items per block of users)."""
    from recsys.metrics.beyond import beyond_accuracy

    if result.topk is None or not len(result.users):
        return {}
    ks = [k for k in ks if k <= result.topk.shape[1]]
    out = beyond_accuracy(result.topk, train, ks=ks)
    return {(f"catalog_{k}" if k.startswith("coverage@") else k): float(v) for k, v in out.items()}


# ---- intervals and tests ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """A column a table tests: ``name`` (the per-user array and the result's ``test`` key),
    ``label`` (the column heading), ``group`` (restrict to the users of this group label),
    ``lower_better``, ``transform`` (per-user mean -> reported value, e.g. sqrt for RMSE from
    squared errors) and ``scalar`` (the per-seed value from a result when it is not the mean of
    the per-user array, e.g. Coverage@k, which has no per-user value)."""

    name: str
    label: str = ""
    group: str | None = None
    lower_better: bool = False
    transform: Callable[[float], float] | None = None
    scalar: Callable[[Mapping[str, Any]], float] | None = None

    @property
    def title(self) -> str:
        return self.label or (self.name if self.group is None else f"{self.name} ({self.group})")


def _user_values(pu: PerUser, metric: Metric) -> tuple[np.ndarray, np.ndarray] | None:
    if metric.name not in pu.metrics:
        return None
    values, users = pu.metrics[metric.name], pu.users
    if metric.group is not None:
        if pu.groups is None:
            return None
        keep = pu.groups == metric.group
        values, users = values[keep], users[keep]
    # several rows of one user (e.g. query items of a meta task): the user's mean
    uniq, inv = np.unique(users, return_inverse=True)
    if uniq.size != users.size:
        sums = np.bincount(inv, weights=np.nan_to_num(values), minlength=uniq.size)
        counts = np.bincount(inv, weights=np.isfinite(values).astype(float), minlength=uniq.size)
        values = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return uniq, values


def _mean_over_seeds(runs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-user mean over seeds, on the users every seed evaluated."""
    users = runs[0][0]
    for u, _ in runs[1:]:
        users = np.intersect1d(users, u)
    stacked = np.stack([v[np.searchsorted(u, users)] for u, v in runs])
    return users, stacked.mean(0)


def _align(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    users, ia, ib = np.intersect1d(a[0], b[0], return_indices=True)
    return a[1][ia], b[1][ib]


def _seed_scalar(result: Mapping[str, Any], metric: Metric, pu: PerUser | None) -> float:
    if metric.scalar is not None:
        return float(metric.scalar(result))
    if metric.group is None and metric.name in (result.get("test") or {}) and metric.transform is None:
        return float(result["test"][metric.name])
    if pu is not None:
        uv = _user_values(pu, metric)
        if uv is not None:
            m = float(np.nanmean(uv[1]))
            return metric.transform(m) if metric.transform else m
    return math.nan


def comparison(results: Mapping[Any, Mapping[str, Any]], metrics: Sequence[Metric],
               reference: str | Callable[[str], str | None] | None, *, alpha: float = ALPHA,
               n_resamples: int = TABLE_RESAMPLES, arrays: Mapping[tuple[str, int | None], PerUser] | None = None,
               seed: int = 0) -> dict:
    """Means, intervals and tests of every method of `results` (keys ``(method, seed)`` or
    ``method``), per metric. `reference` names the method every other is tested against, or
    maps a method to its reference (BaM: each model's hard selection); `arrays` gives the per-user
    values by (method, seed) when they are not read from the results' ``per_user`` records.

    Returns ``{"reference", "alpha", "metrics": {title: {method: {"mean", "ci", "ci_over",
    "n_seeds", "n_users", "vs": {...} | None}}}}``."""
    from scipy import stats as st

    from recsys.metrics import significance as sig

    by_method: dict[str, list[tuple[int | None, Mapping[str, Any], PerUser | None]]] = {}
    for key, result in results.items():
        method, s = method_of(key), seed_of(key, result)
        if arrays is not None:
            pu = arrays.get((method, s))
        else:
            record = (result or {}).get("per_user")
            pu = load_per_user(record, what=f"per-user file of {method}") if record else None
        by_method.setdefault(method, []).append((s, result, pu))
    ref_of = (lambda m: reference) if not callable(reference) else reference
    out: dict[str, Any] = {"reference": reference if not callable(reference) else "per method",
                           "alpha": alpha, "resamples": n_resamples, "metrics": {}}
    for metric in metrics:
        sign = -1.0 if metric.lower_better else 1.0
        table: dict[str, dict] = {}
        users_of: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        seeds_of: dict[str, dict[int | None, float]] = {}
        for method, runs in by_method.items():
            per_seed = {s: _seed_scalar(r, metric, pu) for s, r, pu in runs}
            per_seed = {s: v for s, v in per_seed.items() if np.isfinite(v)}
            uv = [x for x in (_user_values(pu, metric) for _, _, pu in runs if pu is not None) if x is not None]
            users_of[method] = _mean_over_seeds(uv) if uv else None
            seeds_of[method] = per_seed
            if not per_seed and users_of[method] is None:
                continue
            values = list(per_seed.values())
            entry: dict[str, Any] = {"n_seeds": len(values), "n_users": None, "ci": None, "ci_over": None,
                                     "mean": float(np.mean(values)) if values else math.nan, "vs": None}
            # a model that gives the same result whatever the seed (most-popular run per seed) has no
            # spread over seeds to speak of: its interval is over the users instead
            if len(values) >= MIN_SEEDS and np.ptp(values) > 0:
                _, low, high = sig.seed_ci(values)
                entry.update(ci=[low, high], ci_over="seeds")
            if users_of[method] is not None:
                u, v = users_of[method]
                entry["n_users"] = int(np.isfinite(v).sum())
                if entry["ci"] is None and entry["n_users"] > 1:
                    m, low, high = sig.bootstrap_ci(v, n_resamples=n_resamples, seed=seed)
                    if metric.transform:
                        m, low, high = metric.transform(m), metric.transform(low), metric.transform(high)
                    entry.update(ci=[low, high], ci_over="users")
                    if not values:
                        entry["mean"] = m
            table[method] = entry
        pending: list[tuple[str, dict]] = []
        for method, entry in table.items():
            ref = ref_of(method)
            if ref is None or ref == method or ref not in table:
                continue
            vs: dict[str, Any] = {"reference": ref, "diff": entry["mean"] - table[ref]["mean"]}
            ref_mean = table[ref]["mean"]
            vs["relative"] = vs["diff"] / abs(ref_mean) if ref_mean else math.nan
            a, b = users_of.get(method), users_of.get(ref)
            if a is not None and b is not None:
                x, y = _align(a, b)
                keep = np.isfinite(x) & np.isfinite(y)
                if keep.sum() > 1:
                    x, y = x[keep], y[keep]
                    vs.update(n_users=int(x.size), p_wilcoxon=sig.wilcoxon_test(x, y),
                              p_randomization=sig.randomization_test(x, y, n_resamples=n_resamples, seed=seed),
                              **{k: v for k, v in sig.effect_size(x, y).items() if k in ("cohen_dz", "rank_biserial")})
            sa, sb = seeds_of.get(method, {}), seeds_of.get(ref, {})
            common = sorted(set(sa) & set(sb) - {None})
            if len(common) >= MIN_SEEDS:
                d = np.array([sa[s] - sb[s] for s in common])
                vs.update(n_seeds=len(common), p_seeds=1.0 if not np.any(d) else float(st.ttest_1samp(d, 0.0).pvalue))
            elif len(sa) >= MIN_SEEDS and len(sb) == 1:  # a reference without seeds (most-popular, EASE)
                d = np.array(list(sa.values())) - next(iter(sb.values()))
                vs.update(n_seeds=len(d), p_seeds=1.0 if not np.any(d) else float(st.ttest_1samp(d, 0.0).pvalue))
            entry["vs"] = vs
            pending.append((method, vs))
        for test in ("p_wilcoxon", "p_randomization", "p_seeds"):
            having = [(m, vs) for m, vs in pending if test in vs]
            for (m, vs), p in zip(having, sig.holm([vs[test] for _, vs in having])):
                vs[f"{test}_holm"] = p
        for _, vs in pending:
            ps = [vs[k] for k in ("p_wilcoxon_holm", "p_randomization_holm", "p_seeds_holm") if k in vs]
            vs["significant"] = bool(ps) and all(p < alpha for p in ps)
            vs["better"] = bool(vs["significant"] and sign * vs["diff"] > 0)
        out["metrics"][metric.title] = table
    return out


# ---- table cells --------------------------------------------------------------------------------------

def _num(v: float, digits: int) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def interval_cell(entry: Mapping[str, Any] | None, digits: int = 4) -> str:
    """``0.3123 [0.3050, 0.3190]`` (mean and 95 % interval), the mean alone without an interval."""
    if not entry:
        return "-"
    mean = _num(entry["mean"], digits)
    if not entry.get("ci"):
        return mean
    low, high = entry["ci"]
    return f"{mean} [{_num(low, digits)}, {_num(high, digits)}]"


def vs_cell(entry: Mapping[str, Any] | None, digits: int = 4) -> str:
    """``+0.0123 p=0.003 *`` (difference to the reference, the largest Holm-adjusted p of the
    tests that ran, ``*`` when significant); ``ref`` for the reference itself."""
    if not entry:
        return "-"
    vs = entry.get("vs")
    if vs is None:
        return "ref" if entry.get("is_reference") else "-"
    ps = [vs[k] for k in ("p_wilcoxon_holm", "p_randomization_holm", "p_seeds_holm") if k in vs]
    p = f" p={max(ps):.3g}" if ps else " (no test)"
    return f"{vs['diff']:+.{digits}f}{p}{' *' if vs.get('significant') else ''}"


def mark_references(evidence: Mapping[str, Any]) -> Mapping[str, Any]:
    """Flag the methods others were tested against (``is_reference``), for :func:`vs_cell`."""
    for table in evidence.get("metrics", {}).values():
        refs = {e["vs"]["reference"] for e in table.values() if e.get("vs")}
        for m in refs:
            if m in table:
                table[m]["is_reference"] = True
    return evidence


def columns(evidence: Mapping[str, Any] | None, methods: Sequence[str], digits: int = 4
            ) -> tuple[list[str], list[list[str]]]:
    """Two columns per tested metric (``<metric> [95% CI]``, ``vs <reference>``), one row per method."""
    if not evidence or not evidence.get("metrics"):
        return [], [[] for _ in methods]
    mark_references(evidence)
    ref = evidence.get("reference")
    headers: list[str] = []
    for title in evidence["metrics"]:
        headers += [f"{title} [95% CI]", f"vs {ref}" if isinstance(ref, str) else "vs reference"]
    cells = []
    for m in methods:
        row = []
        for table in evidence["metrics"].values():
            row += [interval_cell(table.get(m), digits), vs_cell(table.get(m), digits)]
        cells.append(row)
    return headers, cells


def footnote(evidence: Mapping[str, Any] | None) -> str:
    """The sentence under a table saying what its intervals and marks mean."""
    if not evidence or not evidence.get("metrics"):
        return ""
    return (f"[95% CI]: over seeds (Student t) with {MIN_SEEDS}+ seeds, else bootstrap over test users "
            f"({evidence.get('resamples', TABLE_RESAMPLES)} resamples). vs: difference to the reference and the largest "
            f"Holm-adjusted p of the paired tests that apply (Wilcoxon and randomization over users, t over seeds); "
            f"* = all below {evidence.get('alpha', ALPHA)}.")

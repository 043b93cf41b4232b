"""Every key of every results file is one its writer declares (issue 31: no hand-merged keys).

    python benchmarks/check_results_keys.py [--results-dir benchmarks/results] [--scan] [-v]

``WRITERS`` names the script that writes each results file. A writer declares what it writes in
a module-level ``WRITES``: a dict from key patterns (``fnmatch``; an exact key first, then the
first pattern that matches, in order) to what lies below that key: ``None`` (not checked
further), a set of key patterns (leaf keys, their values not checked), or another dict. The check
reads ``WRITES`` from the script's source (its upper-case module-level constants are evaluated
from their literals: nothing is imported or run) and lists every key of the file that it does not
declare, with its path. A writer without ``WRITES`` (a script this issue did not change) is
checked at the top level against the string literals and keyword names of its source. Files with
no known writer are listed (``UNKNOWN`` says what they are) and do not fail the check.

``--scan`` also lists, for every results file, top-level keys that appear as a string literal in
no Python file of benchmarks/, flows/, scripts/ or recsys/ and match no pattern of its writer's
``WRITES`` (a key no code could have written).

Exit status 1 when some key is undeclared (or a file has two writers, or a WRITES cannot be read).
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# results file patterns -> the script (in benchmarks/) that writes them
WRITERS = {
    "ablate_tall_gate.py": ("tall_gate_ablation_*.json",),
    "bench_bam_step.py": ("bam_step_ml1m.json",),
    "bench_bound.py": ("bound_cpu.json",),
    "bench_loop_overhead.py": ("loop_overhead_ml1m.json",),
    "bench_meta_iteration.py": ("meta_iteration_*.json",),
    "bench_posit_epoch.py": ("posit_epoch_*.json",),  # its --out
    "bench_seq_epoch.py": ("seq_epoch_cpu.json",),
    "bench_tail_memory.py": ("tail_memory.json",),
    "bench_tall_epoch.py": ("tall_epoch_*.json",),  # its --out
    "claims.py": ("claims.json",),
    "compare_meta_paper.py": ("meta_paper_comparison.json",),
    "cost_model.py": ("cost_model.json",),
    "main_job.py": ("main_job.json",),
    "repro_bam.py": ("bam_ml-1m.json", "bam_amazon-*.json"),
    "repro_bert4rec.py": ("bert4rec_*.json",),
    "repro_defaults_ml100k.py": ("defaults_ml100k.json",),
    "repro_meta.py": ("meta_ml-*.json", "meta_amazon-*.json"),  # meta_<dataset><tag>.json
    "repro_meta_status.py": ("meta_paper_status.json",),
    "repro_multvae_seed004.py": ("multvae_seed004_ml1m.json",),
    "repro_seq_amazon.py": ("seq_amazon-*.json",),
    "repro_seq_ml1m.py": ("seq_ml1m.json",),
    "repro_strong_generalization_ml1m.py": ("strong_generalization_ml1m.json",),
    "repro_tail_ml1m.py": ("tail_ml1m.json",),
    "repro_tall_ml1m.py": ("tall_ml1m.json",),
    "scale.py": ("scale_*.json",),
}
# results files no script writes, and what they are
UNKNOWN = {
    "tail_flow_23k.json": "a tail-flow run's per-task records (python flows/tail_flow.py run ... on a synthetic "
                          "23k-item CSV) put together by hand: no script writes this file",
}
CODE_DIRS = ("benchmarks", "flows", "scripts", "recsys")
_NO = object()


def writers_of(name: str) -> list[str]:
    return [script for script, patterns in WRITERS.items() if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def declared_writes(script: Path):
    """The script's ``WRITES``, evaluated from its upper-case module-level constants (None when it
    has none); a ValueError when it cannot be evaluated."""
    tree = ast.parse(script.read_text(), str(script))
    ns: dict = {}
    error = None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if not targets or not all(isinstance(t, ast.Name) and t.id.isupper() for t in targets) or node.value is None:
            continue
        try:
            exec(compile(ast.Module([node], []), str(script), "exec"), ns)  # noqa: S102 - the repository's own constants
        except Exception as exc:  # a constant built from imports (paths, ...): not needed by WRITES
            if any(t.id == "WRITES" for t in targets):
                error = exc
    if error is not None:
        raise ValueError(f"{script.name}: WRITES cannot be evaluated from its constants ({error!r})")
    return ns.get("WRITES")


def _lookup(spec: dict, key: str):
    if key in spec:
        return spec[key]
    for pattern, sub in spec.items():
        if fnmatch.fnmatchcase(key, pattern):
            return sub
    return _NO


def undeclared(value, spec, path: tuple = ()) -> list[tuple]:
    """Paths of the keys of `value` that `spec` does not declare."""
    if spec is None or not isinstance(value, dict):
        return []
    if isinstance(spec, (set, frozenset, list, tuple)):
        spec = dict.fromkeys(spec)
    out = []
    for key, sub_value in value.items():
        sub = _lookup(spec, key)
        if sub is _NO:
            out.append((*path, key))
        else:
            out.extend(undeclared(sub_value, sub, (*path, key)))
    return out


def literals(paths) -> set[str]:
    """Every string constant (and f-string piece, and keyword-argument name) of these Python files."""
    out: set[str] = set()
    for path in paths:
        try:
            tree = ast.parse(Path(path).read_text(), str(path))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.add(node.value)
            elif isinstance(node, ast.keyword) and node.arg:
                out.add(node.arg)
    return out


def show(path: tuple) -> str:
    return " > ".join(str(k) for k in path)


def check(results_dir: Path, scan: bool = False, verbose: bool = False) -> int:
    failures = 0
    cache: dict[str, object] = {}
    all_literals = None
    for file in sorted(results_dir.glob("*.json")):
        try:
            doc = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            print(f"{file.name}: not JSON ({exc})")
            failures += 1
            continue
        names = writers_of(file.name)
        if len(names) > 1:
            print(f"{file.name}: claimed by {', '.join(names)}")
            failures += 1
            continue
        if not names:
            print(f"{file.name}: no known writer - {UNKNOWN.get(file.name, 'not in WRITERS or UNKNOWN')}")
            if scan:
                all_literals = all_literals if all_literals is not None else literals(_code_files())
                missing = [k for k in doc if k not in all_literals]
                print(f"    top-level keys no code names: {missing or 'none'}")
            continue
        script = HERE / names[0]
        if names[0] not in cache:
            try:
                cache[names[0]] = declared_writes(script)
            except ValueError as exc:
                cache[names[0]] = exc
        spec = cache[names[0]]
        if isinstance(spec, ValueError):
            print(f"{file.name} <- {names[0]}: {spec}")
            failures += 1
            continue
        if spec is None:  # not declared: the top level against the script's literals
            known = literals([script])
            bad = [(k,) for k in doc if k not in known] if isinstance(doc, dict) else []
            how = "no WRITES; top level against its literals"
        else:
            bad = undeclared(doc, spec)
            how = "WRITES"
        status = "ok" if not bad else f"{len(bad)} undeclared"
        print(f"{file.name} <- {names[0]} ({how}): {status}")
        for path in bad if verbose or len(bad) <= 20 else bad[:20]:
            print(f"    {show(path)}")
        if len(bad) > 20 and not verbose:
            print(f"    ... {len(bad) - 20} more (-v)")
        failures += bool(bad)
        if scan and isinstance(doc, dict):
            all_literals = all_literals if all_literals is not None else literals(_code_files())
            missing = [k for k in doc if k not in all_literals and (spec is None or undeclared({k: None}, spec))]
            if missing:
                print(f"    top-level keys no code names: {missing}")
    print(f"{'FAILED' if failures else 'passed'}: {failures} file(s) with undeclared keys")
    return 1 if failures else 0


def _code_files():
    for d in CODE_DIRS:
        yield from (ROOT / d).rglob("*.py")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", type=Path, default=HERE / "results")
    ap.add_argument("--scan", action="store_true",
                    help="also list top-level keys that no Python file of the repository names")
    ap.add_argument("-v", "--verbose", action="store_true", help="every undeclared key, not the first 20")
    a = ap.parse_args()
    sys.exit(check(a.results_dir, a.scan, a.verbose))


if __name__ == "__main__":
    main()

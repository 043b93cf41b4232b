"""The package's layers: no import runs from a lower layer to a higher one, no module imports
itself back through others, and ``recsys.models.base`` loads no model family (models register
themselves; :mod:`recsys.models.registry` imports the families by name on the first lookup)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Each top-level part of the package and the parts it may import (imports inside functions count too).
ALLOWED = {
    "errors": set(),
    "checks": {"errors"},
    "io": {"errors"},
    "data": {"errors", "checks", "io"},
    "training": {"errors", "checks", "io"},
    "metrics": {"errors", "checks", "io", "training"},
    "protocols": {"errors", "checks", "io", "data"},
    "models": {"errors", "checks", "io", "data", "training", "metrics", "protocols"},
    "pipeline": {"errors", "checks", "io", "data", "training", "metrics", "protocols", "models"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the recsys modules it imports (anywhere in its body)."""
    modules = {_module_name(p): p for p in (ROOT / "recsys").rglob("*.py")}
    out: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            out[name].update(t for t in targets if t in modules and t != name)
    return out


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    wrong = sorted(f"{a} imports {b}" for a, bs in _imports().items() for b in bs
                   if _part(a) and _part(b) and _part(a) != _part(b) and _part(b) not in ALLOWED[_part(a)])
    assert not wrong, "\n".join(wrong)


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(m) for m in _imports()} | {p.stem for p in (ROOT / "recsys").iterdir()
                                               if p.suffix == ".py" or p.is_dir() and (p / "__init__.py").exists()}
    assert parts - {"", "__init__"} <= set(ALLOWED)


def test_no_import_cycle_between_modules():
    graph = _imports()
    # a package's __init__ re-exporting its own modules is not a cycle through other modules
    graph = {a: {b for b in bs if not a.startswith(b + ".")} for a, bs in graph.items()}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in list(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_model_contracts_load_no_model_family():
    code = ("import sys, recsys.models.base; "
            "print(sorted(m for m in sys.modules if m.startswith('recsys.models.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert eval(out) == ["recsys.models.base", "recsys.models.registry"]


def test_the_registry_finds_every_family_on_first_lookup():
    code = ("import recsys.models.registry as r; print(len(r.registered_models())); "
            "print(r.get_model('tall').__module__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["22", "recsys.models.local.tall"]

"""The house's arrows: every `immersions` import, module-level or inside a function, read
with `ast` (nothing is imported), drawn as a graph between modules.

No cycles at all; and imports run down the layer table below, except at most
`MAX_UPWARD` that carry a `# upward: why` comment on their import line.

`python tests/test_imports.py` prints the graph's cycles and upward imports.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "app" / "immersions"
MAX_UPWARD = 2

# Cycles allowed for now, each named (none): any other fails the test, and a named one that is
# gone fails it too, so this list never outlives what it names.
KNOWN_CYCLES: list[list[str]] = []

# Lowest first. A module belongs to the entry with the longest name that is its own name or
# a dotted prefix of it (without "immersions."; "" is the package itself). A module may
# import its own layer and any layer below.
LAYERS: list[tuple[str, ...]] = [
    ("", "errors", "paths", "registry", "heap", "frames"),  # the ground floor: imports nothing of ours but errors
    ("audio",),                                  # signal code: decode, write, EQ, measures, scalogram
    ("synth",),                                  # the procedural generator and its starter clips
    ("devices",),                                # real-time sound in and out (player, capture, recorder)
    ("model",),                                  # the artificial ear
    ("train",),                                  # corpora, trainer, probe
    ("selection",),                              # regions of the network
    ("dream",),                                  # the dream step, its engines, listening
    ("layout",),                                 # the map of the network
    ("control",),                                # MIDI, OSC, presets, Link, automation
    ("visual",),                                 # the picture
    ("performance",),                            # the stage: the performance that ties them together,
                                                 # its overlay, and the windows that run it
    ("install", "remote"),                       # the gallery mode and the GPU server
    ("bench",),                                  # timing scripts
    ("cli", "__main__"),                         # the command line
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The most specific module of ours that `name` (dotted) names."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int, str]]:
    """(target module, line number, source line) for every import of ours in the file."""
    text = path.read_text()
    lines = text.splitlines()
    found = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(text, str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from immersions.x import y` names module immersions.x.y when y is one
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            if target != "immersions" and not target.startswith("immersions."):
                continue
            module = resolve(target, known)
            if module is not None and module != name:
                line = lines[node.lineno - 1]
                found.append((module, node.lineno, line))
    return found


def graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int, str]]]:
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    records = {}
    for name, path in known.items():
        for target, lineno, line in imports(name, path, known):
            edges[name].add(target)
            records[(name, target, lineno)] = (name, target, lineno, line)
    return edges, list(records.values())


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [cycle_path(g, edges) for g in groups]


def cycle_path(group: list[str], edges: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through the group's first module, for the failure message."""
    start, members = group[0], set(group)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return group


def layer(module: str) -> int:
    short = module.removeprefix("immersions").removeprefix(".")
    best, best_len = None, -1
    for i, names in enumerate(LAYERS):
        for prefix in names:
            if (short == prefix or short.startswith(prefix + ".") or (prefix == "" and short == "")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_imports.py's LAYERS: add it where it belongs")
    return best


def upward(records) -> list[tuple[str, str, int, str]]:
    return [r for r in records if layer(r[1]) > layer(r[0])]


def test_every_module_has_a_layer():
    for name in modules():
        layer(name)


def test_no_import_cycles():
    found = cycles(graph()[0])
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert not new, "import cycles: " + "; ".join(" -> ".join(c) for c in new)
    gone = [c for c in KNOWN_CYCLES if c not in found]
    assert not gone, "no longer a cycle, remove it from KNOWN_CYCLES: " + "; ".join(" -> ".join(c) for c in gone)


def test_imports_point_down():
    up = upward(graph()[1])
    unexplained = [r for r in up if "# upward:" not in r[3]]
    listing = "\n".join(f"  {a} -> {b} (line {n})" for a, b, n, _ in up)
    assert not unexplained, ("imports from a lower layer up to a higher one without a '# upward: why' comment:\n"
                             + "\n".join(f"  {a} -> {b} (line {n})" for a, b, n, _ in unexplained))
    assert len(up) <= MAX_UPWARD, f"{len(up)} upward imports (at most {MAX_UPWARD}):\n{listing}"


def test_the_walker_sees_function_level_and_relative_imports(tmp_path):
    # the walker itself can fail: a cycle hidden in a function body and a relative import are found
    pkg = tmp_path / "immersions"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    from immersions.b import y\n")
    (pkg / "b.py").write_text("from .a import x\n")
    known = {module_name_in(p, tmp_path): p for p in pkg.rglob("*.py")}
    edges = {m: {t for t, _, _ in imports(m, p, known)} for m, p in known.items()}
    assert edges["immersions.a.x"] == {"immersions.b"}
    assert edges["immersions.b"] == {"immersions.a.x"}
    assert cycles(edges) == [["immersions.a.x", "immersions.b", "immersions.a.x"]]


def test_the_walker_sees_an_import_that_goes_up():
    records = [("immersions.audio.io", "immersions.cli.parser", 3, "from immersions.cli.parser import main"),
               ("immersions.cli.parser", "immersions.audio.io", 5, "from immersions.audio.io import write_wav")]
    assert upward(records) == records[:1]
    assert layer("immersions.performance.gui") > layer("immersions.visual.scene") > layer("immersions.dream.engine")


# Above model/, the house hears through the Ear interface (model/ear.py) and never names the
# CPC class or its module; training needs the CPC itself (its loss, its presets' shapes).
CPC_ALLOWED = {
    "immersions.train": "training code: trains a CPC",
    "immersions.bench.model": "times CPC's training step (its loss) beside its dream step",
    "immersions.bench.corpus": "times CPC training on each corpus",
}


def names_cpc(path: Path) -> list[tuple[int, str]]:
    """(line, source) of every import that names the CPC class or imports model/cpc.py."""
    text = path.read_text()
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("immersions"):
            if node.module == "immersions.model.cpc" or any(a.name == "CPC" for a in node.names):
                found.append((node.lineno, lines[node.lineno - 1].strip()))
        elif isinstance(node, ast.Import) and any(a.name == "immersions.model.cpc" for a in node.names):
            found.append((node.lineno, lines[node.lineno - 1].strip()))
    return found


def cpc_allowed(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in CPC_ALLOWED)


def test_no_room_above_the_ear_names_cpc():
    ears = layer("immersions.model")
    named = [f"  {name} (line {n}): {line}" for name, path in modules().items()
             if layer(name) > ears and not cpc_allowed(name) for n, line in names_cpc(path)]
    assert not named, "rooms above model/ must use the Ear interface (model/ear.py), not CPC:\n" + "\n".join(named)


def test_the_cpc_check_sees_every_way_of_naming_it(tmp_path):
    for source in ("from immersions.model import CPC, preset\n", "def f():\n    from immersions.model.cpc import for_dreaming\n",
                   "import immersions.model.cpc\n"):
        (tmp_path / "x.py").write_text(source)
        assert names_cpc(tmp_path / "x.py"), source
    (tmp_path / "x.py").write_text("from immersions.model.ear import Ear\nfrom immersions.model.checkpoint import load_model\n")
    assert not names_cpc(tmp_path / "x.py")
    assert cpc_allowed("immersions.train.trainer") and not cpc_allowed("immersions.dream.dreamer")
    assert not cpc_allowed("immersions.bench.modeling")


def module_name_in(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


if __name__ == "__main__":
    edges, records = graph()
    for c in cycles(edges):
        print("cycle:", " -> ".join(c))
    up = upward(records)
    print(f"{len(up)} upward imports")
    for a, b, n, line in up:
        print(f"  {a} -> {b} (line {n}): {line.strip()}")

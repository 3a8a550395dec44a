"""The import graph of minis2s (every import, those inside functions too): no cycle; the layers in
minis2s/nn/ import nothing from the floors above them (the model, the loss, the application); and the
book (the maths a learner reads, minis2s/__init__.py's first part) imports nothing from the
application."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the layers may use the array backend, the one dispatch to the fast twins, and the random generator
NN_MAY_IMPORT = {"minis2s.backend", "minis2s.dispatch", "minis2s.rng"}
# the book: minis2s/nn/ and these; the application is what minis2s/__init__.py lists as such
BOOK = {"minis2s.backend", "minis2s.dispatch", "minis2s.rng", "minis2s.batch", "minis2s.loss", "minis2s.model",
        "minis2s.transformer", "minis2s.decode", "minis2s.optim"}
APPLICATION = {"minis2s.cli", "minis2s.__main__", "minis2s.config", "minis2s.train", "minis2s.parallel",
               "minis2s.translator", "minis2s.ensemble", "minis2s.data", "minis2s.subword", "minis2s.datasets",
               "minis2s.datasets.build_subsets", "minis2s.checkpoint", "minis2s.metrics", "minis2s.plots"}


def module_name(path):
    """minis2s/nn/rnn.py -> minis2s.nn.rnn; kernels/cuda/rnn.py -> minis2s.kernels.cuda.rnn."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "kernels":
        parts = ["minis2s"] + parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path, modules):
    """The minis2s modules that ``path`` imports anywhere in its body (relative imports resolved; a
    from-import of a submodule counts as that submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def graph():
    paths = list((ROOT / "minis2s").rglob("*.py")) + list((ROOT / "kernels").rglob("*.py"))
    modules = {module_name(p): p for p in paths}
    return {name: imports_of(path, modules) for name, path in modules.items()}


def find_cycle(edges):
    """One cycle as a list of module names, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def imports_from_above(edges):
    """{layer module: the modules above the layers that it imports}, for the layers that do."""
    above = {}
    for name, targets in edges.items():
        if name.startswith("minis2s.nn"):
            wrong = {t for t in targets if not t.startswith("minis2s.nn") and t not in NN_MAY_IMPORT}
            if wrong:
                above[name] = sorted(wrong)
    return above


def book_imports_of_the_application(edges):
    """{book module: the application modules it imports}, for those that do."""
    return {name: sorted(targets & APPLICATION) for name, targets in edges.items()
            if (name in BOOK or name.startswith("minis2s.nn")) and targets & APPLICATION}


def test_no_import_cycle():
    edges = graph()
    assert len(edges) > 40 and "minis2s.nn.rnn" in edges and "minis2s.kernels.cuda.rnn" in edges
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_the_layers_import_nothing_from_above_them():
    assert imports_from_above(graph()) == {}


def test_the_book_imports_nothing_from_the_application():
    edges = graph()
    assert BOOK | APPLICATION <= set(edges), sorted((BOOK | APPLICATION) - set(edges))
    assert book_imports_of_the_application(edges) == {}


def test_the_checks_can_fail():
    """The three that were there are found: backend.rng importing rng (which imports backend),
    nn/rnn.py importing length_mask from loss.py, and model.py importing BOS and PAD from data.py."""
    edges = graph()
    edges["minis2s.backend"] = edges["minis2s.backend"] | {"minis2s.rng"}
    cycle = find_cycle(edges)
    assert cycle is not None and {"minis2s.backend", "minis2s.rng"} <= set(cycle)
    edges["minis2s.nn.rnn"] = edges["minis2s.nn.rnn"] | {"minis2s.loss"}
    assert imports_from_above(edges) == {"minis2s.nn.rnn": ["minis2s.loss"]}
    edges["minis2s.model"] = edges["minis2s.model"] | {"minis2s.data"}
    assert book_imports_of_the_application(edges) == {"minis2s.model": ["minis2s.data"]}

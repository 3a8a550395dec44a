"""The derivations' links to the code: check them, or bring their line ranges up to date.

A link names a function, method or class in backticks and points at its lines:

    [`lstm_step_backward`](../../minis2s/nn/rnn_cells.py#L98-L113)
    [`Decoder.step_backward`](../../minis2s/nn/decoder.py#L160-L186)

    python docs/relink.py            check every link in docs/ (exit 1 and a list if any is stale)
    python docs/relink.py --fix      rewrite each range to where the named definition is now

tests/test_docs.py runs the check: a link past the end of its file, or whose range no longer holds
the definition it names, fails the suite.
"""
import ast
import pathlib
import re
import sys

DOCS = pathlib.Path(__file__).resolve().parent
LINK = re.compile(r"\[`([A-Za-z_][\w.]*)`\]\(([^)#\s]+)#L(\d+)-L(\d+)\)")


def definitions(path):
    """{qualified name: (first line, last line)} of every function, method and class in a Python file
    (the first line is the first decorator's)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                found[name] = (first, child.end_lineno)
                visit(child, name + ".")
    visit(tree, "")
    return found


def links(markdown):
    """(match, name, target path, first, last) for every code link in one Markdown file."""
    for match in LINK.finditer(markdown.read_text(encoding="utf-8")):
        name, target, first, last = match.group(1), match.group(2), int(match.group(3)), int(match.group(4))
        yield match, name, (markdown.parent / target).resolve(), first, last


def problems(root=DOCS):
    """A line for each stale link under ``root``: the file is missing, the range runs past its end, or the
    range does not hold the definition the link names."""
    found = []
    for markdown in sorted(root.rglob("*.md")):
        for _, name, target, first, last in links(markdown):
            where = f"{markdown.relative_to(root)}: [{name}]({target.name}#L{first}-L{last})"
            if not target.exists():
                found.append(f"{where}: no such file")
                continue
            lines = target.read_text(encoding="utf-8").splitlines()
            if not 1 <= first <= last <= len(lines):
                found.append(f"{where}: past the end of the file ({len(lines)} lines)")
                continue
            span = definitions(target).get(name) if target.suffix == ".py" else None
            short = name.rsplit(".", 1)[-1]
            text = "\n".join(lines[first - 1:last])
            if span is None or not (first <= span[0] and span[1] <= last) \
                    or not re.search(rf"\b(def|class) {re.escape(short)}\b", text):
                found.append(f"{where}: the range does not hold {name} (it is at {span})")
    return found


def fix(root=DOCS):
    """Rewrite every link's range to its definition's current lines; returns how many changed."""
    changed = 0
    for markdown in sorted(root.rglob("*.md")):
        text = markdown.read_text(encoding="utf-8")

        def replace(match):
            nonlocal changed
            name, target = match.group(1), (markdown.parent / match.group(2)).resolve()
            span = definitions(target).get(name) if target.suffix == ".py" and target.exists() else None
            if span is None:
                return match.group(0)
            new = f"[`{name}`]({match.group(2)}#L{span[0]}-L{span[1]})"
            changed += new != match.group(0)
            return new
        new_text = LINK.sub(replace, text)
        if new_text != text:
            markdown.write_text(new_text, encoding="utf-8")
    return changed


if __name__ == "__main__":
    if "--fix" in sys.argv[1:]:
        print(f"{fix()} links updated")
    stale = problems()
    print("\n".join(stale) if stale else "every link holds what it names")
    sys.exit(1 if stale else 0)

"""The package's shape: dependencies point one way (magics → api → ui → engine, and inside the engine
every subpackage → core), no import circles (lazy imports inside functions included), and no module
imports another module's private names."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).parents[1] / "bigmodel_nb"
LAYERS = {"magics": 3, "inspect_magics": 3, "sweep_magics": 3, "parsing": 3, "api": 2, "ui": 1, "engine": 0,
          "models": 0}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path) -> list[tuple[str, list[str]]]:
    """(imported module, names) for every import in the file, at any depth (lazy imports inside functions
    too), resolved to absolute names."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: never imported at run time
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = [a.name for a in node.names]
            if not node.module:  # from . import x: each x is a module
                found += [(f"{target}.{n}", []) for n in names]
            else:
                found.append((target, names))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return [(t, n) for t, n in found if t.startswith("bigmodel_nb")]


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: {t for t, _ in imports(path) if t in MODULES and t != name} for name, path in MODULES.items()}


def test_no_import_circles():
    def visit(node, stack, seen):
        for nxt in GRAPH[node]:
            if nxt in stack:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " → ".join(cycle))
            if nxt not in seen:
                seen.add(nxt)
                visit(nxt, stack + [nxt], seen)

    for start in GRAPH:
        visit(start, [start], {start})


def test_dependencies_point_one_way():
    def layer(name):
        top = name.split(".")[1] if "." in name else "bigmodel_nb"
        return LAYERS.get(top, 4)

    for name, targets in GRAPH.items():
        for target in targets:
            if name.split(".")[:2] == ["bigmodel_nb", "engine"] and target.split(".")[:2] == ["bigmodel_nb", "engine"]:
                sub, dep = name.split(".")[2:3], target.split(".")[2:3]
                assert not (sub == ["core"] and dep and dep != ["core"]), f"{name} (core) imports {target}"
                continue
            if name != "bigmodel_nb":
                assert layer(target) <= layer(name), f"{name} imports {target}, a layer above it"


def test_no_module_imports_another_modules_private_names():
    for name, path in MODULES.items():
        for target, names in imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{name} imports {private} from {target}"


def test_the_engine_imports_no_notebook_libraries():
    for name, path in MODULES.items():
        if name.startswith("bigmodel_nb.engine"):
            text = path.read_text()
            for lib in ("IPython", "ipywidgets", "plotly"):
                assert f"import {lib}" not in text and f"from {lib}" not in text, f"{name} imports {lib}"

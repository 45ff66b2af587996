"""Imports run one way, down the pipeline: sae_core <- precompute <- evaluation <- app."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["sae_core", "precompute", "evaluation", "app"]


def imported_packages(path: Path) -> set[str]:
    """Top-level project packages a module imports (module level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in LAYERS}
    return found


def test_no_module_imports_a_higher_layer():
    upward = []
    for rank, package in enumerate(LAYERS):
        for path in sorted((REPO / package).rglob("*.py")):
            for other in imported_packages(path):
                if LAYERS.index(other) > rank:
                    upward.append(f"{path.relative_to(REPO)} imports {other}")
    assert not upward, "imports that run up the pipeline:\n" + "\n".join(upward)


def test_the_walker_sees_function_level_imports(tmp_path):
    """The check above must catch a lazy import too (the old sae_core/cli.py had one)."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from app.server import serve\n    import evaluation.cli\n")
    assert imported_packages(probe) == {"app", "evaluation"}

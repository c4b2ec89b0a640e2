"""The layers of docs/architecture.md hold: every import in app/ (lazy ones inside functions too) points down."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"
BASE = {"app", "app.store", "app.imaging", "app.paths", "app.core.atomic"}  # the bottom: no TF, no Qt
QT = ("PySide6", "superqt", "pyqtgraph", "qtawesome", "shiboken6")


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    """ "top" (cli, gui), "middle" (core, inference: kept apart from each other) or "base"."""
    if module in BASE:
        return "base"
    if module in ("app.cli", "app.__main__") or module.startswith("app.gui"):
        return "top"
    return module.split(".")[1]  # "core" or "inference"


def imports(path: Path) -> list[str]:
    """Every module ``path`` imports, relative imports made absolute."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            target = ".".join(filter(None, [base, node.module]))
            found += [target] if node.module else [f"{target}.{alias.name}" for alias in node.names]
    return found


def owner(target: str) -> str | None:
    """The app module ``target`` names (a module, or a name inside one), None outside app."""
    if target != "app" and not target.startswith("app."):
        return None
    parts = target.split(".")
    while parts:
        candidate = APP.parent.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return None


def test_every_import_points_down_and_qt_stays_in_the_gui():
    allowed = {
        "top": {"top", "core", "inference", "base"},
        "core": {"core", "base"},
        "inference": {"inference", "base"},
        "base": {"base"},
    }
    wrong = []
    files = sorted(APP.rglob("*.py"))
    assert len(files) > 30, "app/ was not found"
    for path in files:
        me = module_name(path)
        for target in imports(path):
            if target.split(".")[0] in QT and layer(me) != "top":
                wrong.append(f"{me} imports {target}: Qt belongs to app/gui")
            dependency = owner(target)
            if dependency and dependency != "app" and layer(dependency) not in allowed[layer(me)]:
                wrong.append(f"{me} ({layer(me)}) imports {dependency} ({layer(dependency)})")
    assert not wrong, "imports that point up or sideways (see docs/architecture.md):\n" + "\n".join(sorted(set(wrong)))


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path):
    core = APP / "core" / "review.py"  # imports `from . import events` at the top and `from .dataset ...` lazily
    found = imports(core)
    assert "app.core.events" in found and any(t.startswith("app.core.dataset") for t in found)
    assert owner("app.core.dataset.scan") == "app.core.dataset" and owner("numpy") is None

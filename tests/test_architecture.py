"""docs/ARCHITECTURE.md's import rules, checked on every module of the package.

The rules are read from the doc's "Layers and import rules" table, so the doc and the code cannot
drift apart: an import a row does not allow fails here, naming the module, the line and the rule.
Every import statement counts, also those inside functions (lazy imports are still dependencies).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"


@dataclass(frozen=True)
class Rule:
    layer: str
    package: str  # may contain <task>
    allowed: tuple[str, ...]

    def own(self, module: str) -> str | None:
        """The package of ``module`` this rule covers (the task package for <task>), or None."""
        pattern = re.escape(self.package).replace(re.escape("<task>"), r"[^.]+")
        m = re.match(rf"({pattern})(\.|$)", module)
        return m.group(1) if m else None


def read_rules(doc: Path = DOC) -> list[Rule]:
    text = doc.read_text()
    section = text.split("## Layers and import rules", 1)[1].split("\n## ", 1)[0]
    rules = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[1].startswith("`"):
            continue
        package = cells[1].strip("`")
        allowed = tuple(re.findall(r"`([^`]+)`", cells[2]))
        if not allowed and cells[2] != "nothing of normapps":
            raise AssertionError(f"{doc}: row {package!r} must list packages or say 'nothing of normapps'")
        rules.append(Rule(cells[0], package, allowed))
    return rules


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, dotted normapps module) for every import statement in ``path``."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target in ("normapps", "normapps.tasks"):  # from normapps import norm: a sub-package
                out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, target))
    return [(line, t) for line, t in out if t == "normapps" or t.startswith("normapps.")]


def rule_for(module: str, rules: list[Rule]) -> tuple[Rule, str]:
    matches = [(r, own) for r in rules if (own := r.own(module)) is not None]
    if not matches:
        raise AssertionError(f"{module} belongs to no layer of docs/ARCHITECTURE.md")
    return max(matches, key=lambda m: len(m[1]))


def violations(package_root: Path, rules: list[Rule]) -> list[str]:
    """Every import under ``package_root`` (the directory holding ``normapps/``) that breaks a rule."""
    found = []
    for path in sorted((package_root / "normapps").rglob("*.py")):
        module = module_name(path, package_root)
        rule, own = rule_for(module, rules)
        for line, target in imported_modules(path, module):
            ok = target == own or target.startswith(own + ".") or any(
                target == a or target.startswith(a + ".") for a in rule.allowed)
            if not ok:
                found.append(f"{path.relative_to(package_root)}:{line}: {module} imports {target}, but "
                             f"{rule.layer} ({rule.package}) may import only "
                             f"{', '.join(rule.allowed) or 'nothing of normapps'}")
    return found


def test_the_doc_states_the_rules_the_issue_asks_for():
    rules = {r.package: r for r in read_rules()}
    assert rules["normapps.norm"].allowed == ()  # the core imports nothing from tasks or platform
    assert not any(a.startswith("normapps.tasks") for a in rules["normapps.platform"].allowed)
    assert not any(a.startswith("normapps.tasks") for a in rules["normapps.tasks.<task>"].allowed)


def test_every_module_follows_the_import_rules():
    assert violations(ROOT, read_rules()) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize("files, expected", [
    ({"normapps/tasks/a/x.py": "from normapps.tasks.b.y import f\n"}, "normapps.tasks.a.x imports normapps.tasks.b.y"),
    ({"normapps/tasks/a/x.py": "def f():\n    from ..b import y\n"}, "imports normapps.tasks.b"),
    ({"normapps/norm/x.py": "from normapps.platform import options\n"}, "imports normapps.platform"),
    ({"normapps/norm/x.py": "import normapps.tasks.gan\n"}, "imports normapps.tasks.gan"),
    ({"normapps/platform/x.py": "from normapps import tasks\n"}, "imports normapps.tasks"),
    ({"normapps/data/x.py": "from normapps.platform.runner import run\n"}, "imports normapps.platform.runner"),
])
def test_the_checker_catches_each_kind_of_breach(tmp_path, files, expected):
    root = _tree(tmp_path, files)
    found = violations(root, read_rules())
    assert len(found) == 1 and expected in found[0]


def test_the_checker_allows_what_the_rules_allow(tmp_path):
    root = _tree(tmp_path, {
        "normapps/tasks/a/x.py": "from . import y\nfrom normapps.tasks.a.y import f\nfrom normapps.norm import build_norm\n",
        "normapps/tasks/a/y.py": "from normapps.models import build_classifier\nfrom normapps.platform.int8 import calibrate\n",
        "normapps/data/x.py": "from normapps.platform.options import as_int\n",
        "normapps/demo/x.py": "from normapps.tasks.a.x import f\n",
    })
    assert violations(root, read_rules()) == []


def test_scripts_import_the_installed_package():
    """scripts/ run against the installed normapps (pip install -e .), never a path they patch in."""
    offenders = []
    for path in sorted((ROOT / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("insert", "append", "extend")
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "path"
                    and isinstance(node.func.value.value, ast.Name) and node.func.value.value.id == "sys"):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []

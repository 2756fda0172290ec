"""scripts/*.py import the installed normapps package: none edits sys.path (a script that
inserts the repo root would run a checkout's code instead of what the user installed)."""
import ast

from tests.helpers import ROOT


def _edits_sys_path(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                and node.value.id == "sys"):
            lines.append(node.lineno)
    return lines


def test_no_script_touches_sys_path():
    scripts = sorted((ROOT / "scripts").glob("*.py"))
    assert scripts
    offenders = {p.name: _edits_sys_path(ast.parse(p.read_text(), str(p))) for p in scripts}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_sees_an_edit():
    assert _edits_sys_path(ast.parse("import sys\nsys.path.insert(0, '..')\n")) == [2]
    assert _edits_sys_path(ast.parse('"""its folder is on sys.path"""\n')) == []

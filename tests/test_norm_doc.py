"""docs/norm.md's norm table is the registry's: scripts/gen_norm_doc.py regenerates it, and this
test fails while the committed doc differs from what the script would write."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_norm_doc", ROOT / "scripts" / "gen_norm_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_norm_md_is_current(gen):
    text = (ROOT / "docs" / "norm.md").read_text()
    assert gen.updated(text) == text, "docs/norm.md is stale: run python scripts/gen_norm_doc.py"
    assert gen.main(["--check"]) == 0


def test_every_kind_has_a_row(gen):
    from normapps.norm import NORM_KINDS

    table = gen.render_table()
    for kind in NORM_KINDS:
        assert f"| `{kind}` |" in table


def test_a_new_registry_kind_makes_the_doc_stale(gen, monkeypatch, tmp_path, capsys):
    from normapps.norm import NORM_REGISTRY

    doc = tmp_path / "norm.md"
    doc.write_text((ROOT / "docs" / "norm.md").read_text())
    monkeypatch.setitem(NORM_REGISTRY, "fancy", dataclasses.replace(NORM_REGISTRY["none"], operation="fancy"))
    assert gen.main(["--check", "--doc", str(doc)]) == 1
    assert "stale" in capsys.readouterr().err
    assert gen.main(["--doc", str(doc)]) == 0 and "| `fancy` |" in doc.read_text()
    assert gen.main(["--check", "--doc", str(doc)]) == 0

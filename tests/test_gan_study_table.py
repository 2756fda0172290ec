"""scripts/gan_norm_study.py: per-run rows from a multirun folder and the per-norm aggregate."""
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("gan_norm_study", ROOT / "scripts/gan_norm_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _job(sweep: Path, name: str, d_norm: str, seed: int, fid: float) -> None:
    job = sweep / name
    job.mkdir(parents=True)
    cfg = {"seed": seed, "model": {"d_norm": d_norm, "g_norm": "batch", "loss": "hinge"}}
    (job / "config.yaml").write_text(yaml.safe_dump(cfg))
    metrics = {"val/fid_local": fid, "val/kid_local": fid / 10, "val/is_local": 2.0,
               "val/d_real": 1.0, "val/d_fake": -1.0, "val/sigma_max": 1.0}
    (job / "summary.json").write_text(json.dumps({"metrics": metrics, "g_steps": 400}))


def test_by_norm_aggregates_seeds_and_sorts_by_mean(study, tmp_path):
    _job(tmp_path / "a", "0", "spectral", 42, 100.0)
    _job(tmp_path / "a", "1", "none", 42, 50.0)
    _job(tmp_path / "b", "0", "spectral", 1, 140.0)
    _job(tmp_path / "b", "1", "none", 1, 2000.0)  # a collapsed seed
    rows = study.collect(tmp_path / "a") + study.collect(tmp_path / "b")
    assert [r["fid_local (final)"] for r in rows[:2]] == [50.0, 100.0]  # each sweep sorted by fid
    table = study.by_norm(rows)
    assert [r["d_norm"] for r in table] == ["spectral", "none"]
    spectral = table[0]
    assert spectral["seeds"] == 2 and spectral["fid_local (final) mean"] == pytest.approx(120.0)
    assert spectral["fid_local (final) std"] == pytest.approx(28.284, abs=1e-3)
    assert spectral["fid_local (final) per seed"] == "1: 140 / 42: 100"
    assert "| spectral | 2 |" in study.to_markdown(table)


def test_sample_grid_puts_each_runs_last_grid_in_its_norm_row_and_seed_column(study, tmp_path):
    from PIL import Image

    colours = {("spectral", 42): (255, 0, 0), ("none", 1): (0, 0, 255)}
    for i, ((norm, seed), colour) in enumerate(colours.items()):
        _job(tmp_path / "s", str(i), norm, seed, 10.0)
        images = tmp_path / "s" / str(i) / "images"
        images.mkdir()
        Image.new("RGB", (20, 20), (0, 255, 0)).save(images / "val_samples_step0000010.png")  # earlier eval
        Image.new("RGB", (20, 20), colour).save(images / "val_samples_step0000020.png")
    out = study.sample_grid([tmp_path / "s"], tmp_path / "grid.png")
    grid = Image.open(out).convert("RGB")
    assert grid.size == (40, 2 * (20 + 14))
    # Rows sorted by norm (none, spectral), columns by seed (1, 42); tiles below a 14 px label.
    assert grid.getpixel((10, 14 + 10)) == (0, 0, 255)
    assert grid.getpixel((30, 34 + 14 + 10)) == (255, 0, 0)
    assert grid.getpixel((30, 14 + 10)) == (255, 255, 255)  # no run for (none, 42)


def test_plot_writes_one_point_per_seed_per_norm(study, tmp_path, monkeypatch):
    """--plot: the figure has one scatter point per run, grouped by D norm, ordered by mean."""
    import normapps.platform.plots as plots

    _job(tmp_path / "a", "0", "spectral", 42, 100.0)
    _job(tmp_path / "a", "1", "spectral", 1, 140.0)
    _job(tmp_path / "a", "2", "none", 42, 2000.0)
    seen = {}
    real_save = plots.save_figure

    def spy(fig, output_dir, name, **kw):
        seen["fig"] = fig
        return real_save(fig, output_dir, name, **kw)

    monkeypatch.setattr(plots, "save_figure", spy)
    out = study.plot(study.collect(tmp_path / "a"), tmp_path / "study.png")
    assert out == tmp_path / "study.png" and out.stat().st_size > 0
    ax = seen["fig"].axes[0]
    points = [tuple(map(tuple, c.get_offsets())) for c in ax.collections]
    assert [len(p) for p in points] == [2, 1]  # spectral (mean 120) first, then none
    assert sorted(y for _, y in points[0]) == [100.0, 140.0] and points[1][0][1] == 2000.0
    assert [t.get_text() for t in ax.get_xticklabels()] == ["d_norm=spectral", "d_norm=none"]

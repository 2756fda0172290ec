"""scripts/collect_runs.py: a real (tiny) batch-size-study multirun collected into tables and a
figure, and the aggregation rules on hand-made runs."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.helpers import ROOT, assert_figure, run_cli


def _collect(*args, check=True):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "collect_runs.py"), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_SILENT": "true"})
    if check and proc.returncode != 0:
        raise AssertionError(f"collect_runs {args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_batch_study_multirun_gives_tables_and_a_figure(tmp_path):
    sweep = tmp_path / "sweep"
    # The study's experiment config (SND measured), four runs of two steps each.
    run_cli("train.py", "-m", "experiment=norm_batch_study", "trainer=debug", "model.width=8",
            "model.norm=batch,none", "data.batch_size=8,2", f"hydra.sweep.dir={sweep}")
    out = tmp_path / "study" / "norm_batch.md"
    proc = _collect(sweep, "--rows", "model.norm", "--cols", "data.batch_size", "--metric", "test/acc",
                    "--scale", "100", "--metric", "test/snd", "--scale", "1", "--out", out, "--plot", "--wandb")
    table = out.read_text()
    assert "test/acc (x100)" in table and "| model.norm \\ data.batch_size | 8 | 2 |" in table
    snd = table.split("test/snd", 1)[1]
    assert "| none |  |  |" in snd  # no norm layer: no SND
    batch_snd = [float(v) for v in snd.split("| batch |")[1].split("\n")[0].strip(" |").split(" | ")]
    assert all(v > 0 for v in batch_snd)  # BN's statistics depend on the batch
    assert_figure(tmp_path / "study" / "norm_batch.png")
    assert "norm_batch.png" in proc.stderr
    # the offline W&B run holds the figure and the table
    media = list(sweep.glob("wandb/offline-run-*/files/media/**/*"))
    assert any(p.suffix == ".png" for p in media) and any(p.suffix == ".json" for p in media), media

    # without --out the figure goes into the sweep directory
    _collect(sweep, "--rows", "model.norm", "--cols", "data.batch_size", "--metric", "test/acc", "--plot")
    assert_figure(sweep / "collect_runs.png")


def _fake_run(path, *, norm, batch, seed, acc):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"model": {"norm": norm}, "data": {"batch_size": batch},
                                                      "seed": seed}))
    (path / "summary.json").write_text(json.dumps({"metrics": {"test/acc": acc, "test/loss": "nan"}}))


def test_seeds_are_averaged_and_plotted_as_points(tmp_path):
    acc = {("batch", 4): [0.9, 0.8], ("batch", 32): [0.95, 0.97], ("group", 4): [0.9, 0.92],
           ("group", 32): [0.91, 0.93]}
    i = 0
    for (norm, batch), values in acc.items():
        for seed, a in enumerate(values):
            _fake_run(tmp_path / "sweep" / str(i), norm=norm, batch=batch, seed=seed, acc=a)
            i += 1
    out = tmp_path / "t.md"
    _collect(tmp_path / "sweep", "--rows", "model.norm", "--cols", "data.batch_size", "--metric", "test/acc",
             "--scale", "100", "--metric", "test/loss", "--out", out, "--plot")
    table = out.read_text()
    assert "(mean of 2 runs per cell)" in table
    assert "| batch | 96 | 85 |" in table  # largest batch first, the mean of both seeds
    assert "| group | 92 | 91 |" in table
    assert_figure(tmp_path / "t.png")
    # one --scale per --metric, or one for all: anything else is refused before any work
    proc = _collect(tmp_path / "sweep", "--rows", "model.norm", "--cols", "data.batch_size", "--metric",
                    "test/acc", "--scale", "100", "--scale", "1", "--scale", "2", check=False)
    assert proc.returncode != 0 and "--scale is given 3 times for 1 --metric" in proc.stderr
    proc = _collect(tmp_path / "missing", "--rows", "a", "--cols", "b", "--metric", "m", check=False)
    assert proc.returncode != 0 and "does not exist" in proc.stderr
    for args, message in ((("--rows", "model.nrom"), "--rows model.nrom: no run's config.yaml has this key"),
                          (("--metric", "test/accuracy"), "--metric test/accuracy: no run logged it; logged: test/acc")):
        base = {"--rows": "model.norm", "--cols": "data.batch_size", "--metric": "test/acc"}
        base[args[0]] = args[1]
        proc = _collect(tmp_path / "sweep", *[x for kv in base.items() for x in kv], check=False)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("cols", [[2, 4, 8, 64], ["sgd", "adam"]])
def test_plot_handles_numeric_and_text_columns(cols):
    sys.path.insert(0, str(ROOT))
    from omegaconf import OmegaConf

    from scripts.collect_runs import plot_runs

    runs = [(OmegaConf.create({"r": r, "c": c}), {"metrics": {"m": float(i)}})
            for i, (r, c) in enumerate((r, c) for r in ("a", "b") for c in cols)]
    fig = plot_runs(runs, "r", "c", ["m"], [1.0])
    ax = fig.axes[0]
    assert ax.get_xscale() == ("log" if cols[0] == 2 else "linear")
    assert sorted(t.get_text() for t in ax.get_xticklabels()) == sorted(str(c) for c in cols)
    assert len(ax.get_lines()) == 2

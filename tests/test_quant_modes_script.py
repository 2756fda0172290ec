"""scripts/quant_modes.py: one row per quantization run from its summary.json (its own side-by-side
ratios, never latencies of different runs compared), and the figure drawn from those rows."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("quant_modes", ROOT / "scripts/quant_modes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(root: Path, name: str, mode: str, acc8: float, speedup64: float, real: float | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    metrics = {"test/acc_fp32": 0.98, "test/acc_int8": acc8, "test/acc_drop": 0.98 - acc8,
               "size/ratio": 3.6, "latency/speedup_bs1": 2.0, "latency/speedup_bs64": speedup64}
    if real is not None:
        metrics["test/acc_int8_real_calibration"] = real
    report = [{"model": "fp32", "accuracy": 0.98, "latency_format_bs64": "nchw"},
              {"model": f"int8 ({mode}, fx)", "accuracy": acc8}]
    (run / "summary.json").write_text(json.dumps({"metrics": metrics, "report": report}))
    return run


def test_rows_keep_each_runs_own_ratios_and_the_figure_draws_them(script, tmp_path):
    runs = [_run(tmp_path, "q_ptq", "ptq", 0.97, 5.0), _run(tmp_path, "q_zeroq", "zeroq", 0.90, 4.0, real=0.96)]
    rows = script.collect(runs)
    assert [r["model"] for r in rows] == ["int8 (ptq, fx)", "int8 (zeroq, fx)"]
    assert rows[0]["drop_points"] == pytest.approx(1.0) and rows[1]["speedup_bs64"] == 4.0
    assert "acc_int8_real_calibration" not in rows[0] and rows[1]["acc_int8_real_calibration"] == 0.96
    fig = script.figure(rows)
    acc, bs1, bs64 = fig.axes
    assert sorted(p.get_width() for p in bs64.patches) == [4.0, 5.0]
    assert [t.get_text() for t in acc.get_yticklabels()] == ["int8 (ptq, fx)", "int8 (zeroq, fx)"]
    script.main([str(r) for r in runs] + ["--out", str(tmp_path / "t.md"), "--plot", str(tmp_path / "f.png")])
    assert (tmp_path / "t.md").read_text().startswith("| model |")
    assert (tmp_path / "f.png").stat().st_size > 10_000


def test_a_folder_that_is_not_a_quantization_run_is_named(script, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "summary.json").write_text(json.dumps({"metrics": {}}))
    with pytest.raises(SystemExit, match="other"):
        script.collect([tmp_path / "other"])
    with pytest.raises(SystemExit, match="missing"):
        script.collect([tmp_path / "missing"])

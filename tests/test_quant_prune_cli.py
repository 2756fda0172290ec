"""Prune, then quantize: train.py task=slimming, then task=quantization source_ckpt=<pruned
checkpoint> with the combined float / pruned / int8 / pruned+int8 table, ONNX checked by
onnxruntime, and infer.py on the pruned int8 file."""
import json

import torch

from tests.helpers import infer, train
from tests.test_quant_cli import _digit_folder

ENV = {"OMP_NUM_THREADS": "1"}


def test_prune_then_quantize_end_to_end(tmp_path):
    slim = train(tmp_path / "slim", "task=slimming", "trainer=debug", "logger=csv", "model.width_mult=0.125",
                 "data.image_size=16", "slimming.latency_batch_sizes=[1,4]", "slimming.latency_rounds=1",
                 "slimming.latency_repeats=1", "slimming.recalibrate_batches=2", env=ENV)
    pruned_ckpt = slim["best_checkpoint"]
    onnx = ["quant.onnx=true"] if _has_onnx() else []
    run = tmp_path / "quant"
    summary = train(run, "task=quantization", f"source_ckpt={pruned_ckpt}", "trainer=debug", "logger=csv",
                    "data.image_size=16", "quant.latency_repeats=1", "quant.latency_rounds=1",
                    "quant.calib_batches=1", "quant.bn_recalib_batches=1", *onnx, env=ENV)
    table = summary["prune_quant"]["rows"]
    assert [r["model"] for r in table] == ["float", "pruned", "int8", "pruned+int8"]
    by = {r["model"]: r for r in table}
    assert by["pruned"]["params"] < by["float"]["params"] and by["pruned"]["flops"] < by["float"]["flops"]
    assert by["pruned+int8"]["size_bytes"] < by["pruned"]["size_bytes"] < by["float"]["size_bytes"]
    for r in table:
        assert r["latency_ms_bs1"] > 0 and r["latency_ms_bs64"] > 0 and 0 <= r["accuracy"] <= 1
    assert (run / "prune_quant_report.md").read_text().startswith("| model |")
    # The figures beside the tables: accuracy and latency, float and int8 side by side.
    assert summary["prune_quant"]["figure"] == str(run / "prune_quant_report.png")
    assert (run / "prune_quant_report.png").stat().st_size > 10_000
    assert (run / "quantization_report.png").stat().st_size > 10_000
    assert summary["float_checkpoint"] == slim["stage_checkpoints"]["trained"]["best_checkpoint"]
    assert "prune_quant/speedup_bs64" in summary["metrics"]
    if onnx:
        for name, res in summary["onnx"].items():
            assert res["exported"], (name, res)
            assert res["argmax_agreement"] >= 0.9, (name, res)
    # The pruned int8 file rebuilds the pruned widths from its recorded layer shapes.
    torch.load(run / "quantized.pt", weights_only=True)
    folder = _digit_folder(tmp_path / "digits")
    out = tmp_path / "infer"
    infer(out, "task=quantization", f"ckpt_path={run / 'quantized.pt'}", f"input={folder}", env=ENV)
    assert json.loads((out / "inference.json").read_text())["num_images"] == 20


def _has_onnx() -> bool:
    """The ONNX part runs when the optional extra normapps[onnx] is installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True

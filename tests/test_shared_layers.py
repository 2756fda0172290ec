"""The shared layers tasks lean on (issue 16 items 1-2): the classifier module and batched
prediction in normapps.models / normapps.platform.predict, int8 in normapps.platform.int8, the old
import paths kept as re-exports, and checkpoints loaded by the network they hold."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from normapps.platform.checkpoint import CheckpointError, load_module


def test_old_import_paths_are_the_moved_objects():
    import normapps.models as models
    import normapps.platform.int8 as int8
    import normapps.platform.predict as predict
    from normapps.models.classifier_module import ClassificationModule
    from normapps.tasks.classification import ClassificationModule as via_task
    from normapps.tasks.classification import module as old_module
    from normapps.tasks.classification import predict as old_predict
    from normapps.tasks.quantization import graph, ptq

    assert via_task is old_module.ClassificationModule is models.ClassificationModule is ClassificationModule
    for name in ("predict_batches", "write_predictions", "classify_folder"):
        assert getattr(old_predict, name) is getattr(predict, name)
    for name in ("calibrate", "quantize_fx", "prepare_fx_model", "convert_fx_model", "quantize_pt2e",
                 "prepare_pt2e_model", "convert_pt2e_model", "compile_int8", "qconfig_mapping"):
        assert getattr(ptq, name) is getattr(int8, name)
    assert ptq.BACKENDS == int8.INT8_BACKENDS and graph.unshare_modules is int8.unshare_modules


def test_registry_finds_the_classifier_by_its_new_and_old_paths():
    from normapps.models.classifier_module import ClassificationModule
    from normapps.platform.registry import entry_for_class, entry_for_dotted

    entry = entry_for_class(ClassificationModule)
    assert entry.name == "classifier" and entry.network == "classifier"
    assert entry_for_dotted("normapps.tasks.classification.module.ClassificationModule") is entry


def _digit_folder(root, n=6):
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(n):
        label = int(digits.target[i])
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        img = (digits.images[i] / 16 * 255).astype(np.uint8)
        Image.fromarray(img).resize((16, 16)).save(root / str(label) / f"{i}.png")
    return root


def test_a_slimming_checkpoint_is_a_classifier_wherever_one_is_expected(tiny_checkpoints, tmp_path):
    """Checkpoints say which network they hold: task=classification's infer classifies with a
    pruned (slimming) checkpoint, and a GAN checkpoint is refused naming what it holds."""
    from normapps.tasks.classification.infer import run

    slim = load_module(tiny_checkpoints["slimming"], expected_network="classifier")
    assert type(slim).__name__ == "SlimmingModule"
    folder = _digit_folder(tmp_path / "digits")
    cfg = OmegaConf.create({"ckpt_path": str(tiny_checkpoints["slimming"]), "input": str(folder),
                            "image_size": None, "batch_size": 4})
    result = run(cfg, device=torch.device("cpu"), output_dir=tmp_path)
    assert result["num_images"] == 6 and 0.0 <= result["accuracy"] <= 1.0
    with open(tmp_path / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [set(r) for r in rows[:1]] == [{"path", "prediction", "confidence", "label"}]
    with pytest.raises(CheckpointError, match="holds a 'gan' network"):
        load_module(tiny_checkpoints["gan"], expected_network="classifier")


def test_int8_engine_is_set_in_one_place_and_compile_does_not_freeze_process_wide():
    import torch._inductor.config as inductor_config

    from normapps.platform.int8 import compile_int8, set_int8_engine

    engine = set_int8_engine()
    assert engine in torch.backends.quantized.supported_engines
    assert torch.backends.quantized.engine == engine
    before = inductor_config.freezing
    compile_int8(torch.nn.Linear(2, 2))  # lazy: compiles on first call, with its own options
    assert inductor_config.freezing == before


def test_fx_int8_from_the_platform_matches_float():
    """The shared fx path quantizes a small conv net (what style transfer and quantization use)."""
    from normapps.models import build_classifier
    from normapps.platform.int8 import quantize_fx

    torch.manual_seed(0)
    net = build_classifier("small_cnn", num_classes=4, in_channels=1, width=4).eval()
    batches = [torch.rand(8, 1, 16, 16) for _ in range(4)]
    q = quantize_fx(net, batches, example=batches[0])
    x = torch.rand(16, 1, 16, 16)
    ref, out = net(x), q(x)
    assert any("quantized" in type(m).__module__ for m in q.modules())
    assert (out - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def test_load_or_fit_takes_any_classifier_checkpoint_as_the_source(tiny_checkpoints):
    """The platform's "load source_ckpt or fit" (domain adaptation, quantization): a pruned
    slimming checkpoint is a classifier source; a GAN one is refused before anything is fit."""
    from normapps.platform.runner import load_or_fit

    class NoFit:  # a loaded source must not build or fit anything
        def build_module(self, *a, **k):
            raise AssertionError("fit although source_ckpt was given")

        build_trainer = build_module

    cfg = OmegaConf.create({"source_ckpt": str(tiny_checkpoints["slimming"])})
    module, metrics, paths = load_or_fit(cfg, NoFit(), None, network="classifier")
    assert type(module).__name__ == "SlimmingModule" and metrics == {}
    assert paths == {"best_checkpoint": str(tiny_checkpoints["slimming"]), "last_checkpoint": None}
    with pytest.raises(CheckpointError, match="holds a 'gan' network"):
        load_or_fit(OmegaConf.create({"source_ckpt": str(tiny_checkpoints["gan"])}), NoFit(), None,
                    network="classifier")
    with pytest.raises(ValueError, match="after_fit"):
        load_or_fit(cfg, NoFit(), None, network="classifier", after_fit="later")


def test_trainer_device_is_the_cpu_without_a_gpu():
    from normapps.platform.hardware import trainer_device

    assert trainer_device("cpu").type == "cpu"
    assert trainer_device("gpu").type == ("cuda" if torch.cuda.is_available() else "cpu")

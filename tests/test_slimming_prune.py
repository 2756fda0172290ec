"""Global-threshold pruning: the threshold, the never-empty rule, exact equality with the masked
original, residual coupling, and rebuilding a pruned checkpoint without the original."""
import pytest
import torch
from torch import nn

from normapps.models import build_classifier
from normapps.norm import bn_modules
from normapps.platform.checkpoint import CheckpointError, load_module
from normapps.tasks.slimming import SlimmingModule
from normapps.tasks.slimming.prune import (apply_plan, bn_widths, global_threshold, make_plan,
                                           masked_copy)
from normapps.tasks.slimming.runner import save_module

EXAMPLE = torch.randn(1, 3, 16, 16)


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        x = torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        return self.head(x.mean((2, 3)))


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, bn in bn_modules(model):
            c = bn.num_features
            bn.weight.copy_(torch.rand(c, generator=g) * 2 - 1)
            bn.bias.copy_(torch.rand(c, generator=g) - 0.5)
            bn.running_mean.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
            bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model.eval()


def test_one_global_threshold_not_per_layer():
    model = TwoLayer()
    with torch.no_grad():
        model.b1.weight.copy_(torch.tensor([0.9, -0.8, 0.7, 0.6]))
        model.b2.weight.copy_(torch.tensor([0.05, -0.1, 0.2, 0.3, -0.4, 1.0]))
    plan = make_plan(model, EXAMPLE, ratio=0.5)
    # The 5 smallest |gamma| of all 10 are all in b2: a per-layer rule would cut b1 too.
    assert plan.keep == {"b1": [0, 1, 2, 3], "b2": [5]}
    assert 0.4 < plan.threshold <= 0.6
    assert plan.pruned_fraction() == pytest.approx(0.5)
    assert global_threshold(torch.tensor([3.0, 1.0, 2.0, 4.0]), 0.25) == pytest.approx(1.5)
    assert global_threshold(torch.tensor([3.0, 1.0]), 0.0) == float("-inf")
    with pytest.raises(ValueError, match="slimming.ratio"):
        global_threshold(torch.tensor([1.0]), 1.0)


def test_no_layer_is_ever_emptied():
    model = TwoLayer()
    with torch.no_grad():
        model.b1.weight.copy_(torch.tensor([1e-4, -3e-4, 2e-4, 1e-5]))  # all below any threshold
        model.b2.weight.copy_(torch.tensor([1.0, 0.9, 0.8, 0.7, 0.6, 0.5]))
    plan = make_plan(model, EXAMPLE, ratio=0.5, min_channels=1)
    assert plan.keep["b1"] == [1]  # the strongest survivor
    plan2 = make_plan(model, EXAMPLE, ratio=0.5, min_channels=2)
    assert plan2.keep["b1"] == [1, 2]
    apply_plan(model, EXAMPLE, plan.keep)
    assert bn_widths(model) == {"b1": 1, "b2": 5}
    assert model.c2.in_channels == 1 and model(EXAMPLE).shape == (1, 2)
    with pytest.raises(ValueError, match="min_channels"):
        make_plan(model, EXAMPLE, ratio=0.5, min_channels=0)


@pytest.mark.parametrize("arch", ["vgg11", "cifar_resnet"])
def test_pruned_equals_masked_original(arch):
    torch.manual_seed(0)
    model = _randomize(build_classifier(arch, num_classes=10, width_mult=0.125, width=8, depth=8))
    plan = make_plan(model, EXAMPLE, ratio=0.5, min_channels=1)
    masked = masked_copy(model, plan.keep).eval()
    full_params = sum(p.numel() for p in model.parameters())
    apply_plan(model, EXAMPLE, plan.keep)
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        pruned_out, masked_out = model(x), masked(x)
    torch.testing.assert_close(pruned_out, masked_out, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) < 0.6 * full_params
    assert bn_widths(model) == plan.widths_after


def test_residual_channels_pruned_together():
    torch.manual_seed(0)
    model = _randomize(build_classifier("cifar_resnet", num_classes=10, width=8, depth=8))
    plan = make_plan(model, EXAMPLE, ratio=0.5)
    # stage 1 residual stream: stem BN and the stage's bn2 share channels (identity shortcut)
    assert plan.keep["stem.1"] == plan.keep["blocks.0.bn2"]
    # stage 2: its bn2 is coupled with the projection shortcut's BN
    assert plan.keep["blocks.1.bn2"] == plan.keep["blocks.1.shortcut.1"]
    apply_plan(model, EXAMPLE, plan.keep)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_masking_changes_output_when_channels_are_pruned():
    torch.manual_seed(0)
    model = _randomize(build_classifier("vgg11", num_classes=10, width_mult=0.125))
    plan = make_plan(model, EXAMPLE, ratio=0.5)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(model(x), masked_copy(model, plan.keep).eval()(x))


@pytest.mark.parametrize("arch", ["vgg11", "cifar_resnet"])
def test_pruned_checkpoint_rebuilds_without_original(tmp_path, arch):
    torch.manual_seed(0)
    module = SlimmingModule(arch=arch, num_classes=10, width_mult=0.125, width=8, depth=8)
    module.image_size = 16
    _randomize(module.net)
    plan = make_plan(module.net, EXAMPLE, ratio=0.6)
    apply_plan(module.net, EXAMPLE, plan.keep)
    module.stage = "pruned"
    path = save_module(module, tmp_path / "pruned.ckpt")
    loaded = load_module(path, expected_task="slimming")
    assert bn_widths(loaded.net) == plan.widths_after
    assert loaded.image_size == 16 and loaded.stage == "pruned"
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module.eval()(x))
    # widths that the architecture cannot take are refused with a named error
    ckpt = torch.load(path, weights_only=True)
    first = next(iter(ckpt["slimming"]["bn_widths"]))
    ckpt["slimming"]["bn_widths"][first] = 10_000
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="out of range"):
        load_module(tmp_path / "bad.ckpt")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["small_cnn", "vgg19", "resnet18", "resnet50"])
def test_pruned_equals_masked_on_other_archs(arch):
    torch.manual_seed(0)
    model = _randomize(build_classifier(arch, num_classes=10, width_mult=0.25, width=8))
    example = torch.randn(1, 3, 32, 32)
    plan = make_plan(model, example, ratio=0.5)
    masked = masked_copy(model, plan.keep).eval()
    apply_plan(model, example, plan.keep)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = masked(x)
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    assert plan.pruned_fraction() == pytest.approx(0.5, abs=0.05)

"""Data-free quantization pieces: BN folding as used here, CLE invariance, bias correction."""
import torch
from torch import nn

from normapps.models import build_classifier
from normapps.tasks.quantization import dfq

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def randomized(arch="small_cnn", **kw):
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=10, width=8, **kw)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.2, 2.0)
            m.weight.data.uniform_(0.2, 2.0)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def test_fold_bn_with_stats_keeps_output_and_records_bn_affine():
    for arch, kw in (("small_cnn", {}), ("cifar_resnet", {"depth": 8})):
        model = randomized(arch, **kw)
        x = torch.rand(4, 3, 16, 16)
        folded, stats = dfq.fold_bn_with_stats(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)
        n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        assert len(stats) == n_conv
        first_bn = model.features[0][1] if arch == "small_cnn" else model.stem[1]
        key = "features.0.0" if arch == "small_cnn" else "stem.0"
        torch.testing.assert_close(stats[key].mean, first_bn.bias.detach())


def test_cle_leaves_float_output_unchanged_and_equalizes_ranges():
    model = randomized()
    folded, stats = dfq.fold_bn_with_stats(model)
    # Blow up per-channel ranges of the first layer (compensated in the next): CLE must undo it.
    with torch.no_grad():
        s = torch.logspace(-2, 2, 8)
        folded.features[0][0].weight.mul_(s.view(-1, 1, 1, 1))
        folded.features[0][0].bias.mul_(s)
        folded.features[1][0].weight.div_(s.view(1, -1, 1, 1))
    x = torch.rand(4, 3, 16, 16)
    ref = folded(x)
    pairs = dfq.find_layer_pairs(folded)
    names = {(p.first, p.second) for p in pairs}
    assert ("features.0.0", "features.1.0") in names
    assert ("features.6.0", "head") in names  # through ReLU, global pool and flatten
    spread_before = dfq._out_ranges(folded.features[0][0])
    dfq.cross_layer_equalization(folded, pairs, stats, iterations=5)
    torch.testing.assert_close(folded(x), ref, atol=1e-4, rtol=1e-4)
    spread_after = dfq._out_ranges(folded.features[0][0])
    ratio = lambda r: float(r.max() / r.min())  # noqa: E731
    assert ratio(spread_after) < ratio(spread_before) / 10


def test_cle_on_resnet_is_exact():
    model = randomized("cifar_resnet", depth=8)
    folded, stats = dfq.fold_bn_with_stats(model)
    x = torch.rand(2, 3, 16, 16)
    ref = folded(x)
    pairs = dfq.find_layer_pairs(folded)
    assert any(p.first.endswith("conv1") and p.second.endswith("conv2") for p in pairs)
    dfq.cross_layer_equalization(folded, pairs, stats)
    torch.testing.assert_close(folded(x), ref, atol=1e-4, rtol=1e-4)


def test_expected_relu_output_matches_monte_carlo():
    mean, std = torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([0.5, 1.0, 3.0])
    z = mean + std * torch.randn(200000, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(dfq.expected_relu_output(mean, std), z.clamp_min(0).mean(0),
                               atol=0.02, rtol=0.02)


def test_bias_correction_reduces_quantized_output_mean_error():
    torch.manual_seed(0)
    c_in, c_out = 16, 8
    first = nn.Conv2d(3, c_in, 1)
    second = nn.Conv2d(c_in, c_out, 3, padding=0)
    with torch.no_grad():
        second.weight.mul_(torch.logspace(-1, 1, c_in).view(1, -1, 1, 1))
    model = nn.Sequential(first, nn.ReLU(), second).eval()
    mean, std = torch.linspace(-0.5, 1.5, c_in), torch.linspace(0.3, 1.0, c_in)
    stats = {"0": dfq.PreActStats(mean, std)}
    pairs = dfq.find_layer_pairs(model)
    assert [(p.first, p.second, p.through_relu) for p in pairs] == [("0", "2", True)]
    # Inputs to the second layer drawn from the distribution the BN statistics describe.
    g = torch.Generator().manual_seed(1)
    x = (mean.view(1, -1, 1, 1) + std.view(1, -1, 1, 1) * torch.randn(512, c_in, 5, 5, generator=g)).clamp_min(0)
    float_out = second(x)

    def quant_mean_error() -> torch.Tensor:
        wq = dfq.quantize_weight(second.weight, per_channel=False)
        q_out = nn.functional.conv2d(x, wq, second.bias)
        return (q_out - float_out).mean(dim=(0, 2, 3)).abs()

    before = quant_mean_error()
    bias_before = second.bias.detach().clone()
    assert dfq.bias_correction(model, pairs, stats, per_channel=False) == ["2"]
    after = quant_mean_error()
    assert not torch.equal(second.bias, bias_before)
    assert after.mean() < 0.5 * before.mean()

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


# ---------------------------------------------------------------- MobileNetV2: depthwise, ReLU6
def randomized_mobilenet():
    torch.manual_seed(0)
    model = build_classifier("mobilenet_v2", num_classes=10, width_mult=0.25)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.01, 4.0)  # folding spreads the depthwise channels widely
            m.weight.data.uniform_(0.2, 2.0)
            m.bias.data.uniform_(-0.5, 2.0)
    return model.eval()


def test_cle_pairs_and_equalizes_depthwise_convs_and_iterates_to_convergence():
    folded, stats = dfq.fold_bn_with_stats(dfq.relu6_to_relu(randomized_mobilenet()))
    assert not any(isinstance(m, nn.ReLU6) for m in folded.modules())
    pairs = dfq.find_layer_pairs(folded)
    g = lambda name: getattr(folded.get_submodule(name), "groups", 1) > 1  # noqa: E731
    groups = {(g(p.first), g(p.second)) for p in pairs}
    assert (False, True) in groups and (True, False) in groups  # expand->depthwise, depthwise->project
    x = torch.rand(2, 3, 16, 16)
    ref = folded(x)
    dw = next(p.second for p in pairs if folded.get_submodule(p.second).groups > 1)
    ratio = lambda r: float(r.max() / r.min())  # noqa: E731
    spread_before = ratio(dfq._out_ranges(folded.get_submodule(dw)))
    used = dfq.cross_layer_equalization(folded, pairs, stats, iterations=200, tolerance=1e-4)
    torch.testing.assert_close(folded(x), ref, atol=1e-3, rtol=1e-3)
    assert 1 < used < 200
    assert ratio(dfq._out_ranges(folded.get_submodule(dw))) < spread_before / 2  # 27.7 -> 7.7 here
    # Converged: one more sweep leaves every range where it is.
    before = {p.first: dfq._out_ranges(folded.get_submodule(p.first)).clone() for p in pairs}
    dfq.cross_layer_equalization(folded, pairs, stats, iterations=1)
    for p in pairs:
        torch.testing.assert_close(dfq._out_ranges(folded.get_submodule(p.first)), before[p.first],
                                   rtol=2e-3, atol=1e-6)


def test_high_bias_absorption_keeps_the_function_and_moves_the_bias():
    torch.manual_seed(0)
    c = 8
    first, second = nn.Conv2d(c, c, 1), nn.Conv2d(c, 4, 1)
    gamma, beta = torch.linspace(0.2, 1.0, c), torch.linspace(-1.0, 4.0, c)
    with torch.no_grad():  # first's output channel i is gamma_i * x_i + beta_i: N(beta, gamma^2)
        first.weight.copy_(torch.diag(gamma).view(c, c, 1, 1))
        first.bias.copy_(beta)
    model = nn.Sequential(first, nn.ReLU(), second).eval()
    stats = {"0": dfq.PreActStats(beta.clone(), gamma.clone())}
    pairs = dfq.find_layer_pairs(model)
    x = torch.randn(256, c, 5, 5, generator=torch.Generator().manual_seed(1))
    ref = model(x)
    absorbed = dfq.absorb_high_bias(model, pairs, stats)
    expected = (beta - 3 * gamma).clamp_min(0)
    assert absorbed == ["0"]
    torch.testing.assert_close(first.bias.detach(), beta - expected)
    torch.testing.assert_close(stats["0"].mean, beta - expected)
    # Exact wherever the pre-activations are above the absorbed amount (about 99.9% of them;
    # an output mixes 8 of them).
    err = (model(x) - ref).abs()
    assert float((err > 1e-4).float().mean()) < 0.03
    assert float(err.mean()) < 1e-3


def test_data_free_prepare_on_mobilenet_reports_its_steps():
    model = randomized_mobilenet()
    folded, info = dfq.data_free_prepare(model, per_channel=False)
    assert info["relu6_replaced"] > 0 and info["pairs"] > 0 and info["depthwise_pairs"] > 0
    assert info["high_bias_absorbed"] > 0 and info["cle_iterations"] >= 1
    assert info["bias_corrected"] > 0


def test_weight_range_spread_sees_a_blown_up_channel_and_dfq_shrinks_it():
    model = randomized_mobilenet()
    folded, _ = dfq.fold_bn_with_stats(model)
    first = next(n for n, m in folded.named_modules() if isinstance(m, nn.Conv2d))
    base = dfq.weight_range_spread(folded)[first]
    with torch.no_grad():  # one channel 100x wider: the spread of that layer reads ~100x more
        folded.get_submodule(first).weight[0].mul_(100.0)
    assert dfq.weight_range_spread(folded)[first] > 20 * base
    _, info = dfq.data_free_prepare(model, per_channel=False)
    assert info["max_range_spread_dfq"] < info["max_range_spread_folded"]


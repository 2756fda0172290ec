"""Conditional instance norm with scale/shift given per sample from outside (arbitrary style
transfer), checked against the definition, and its per-style tables against torch's own
instance norm."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from normapps.norm import ConditionalInstanceNorm, build_norm, conditional_instance_norm, instance_moments


def _definition(x, gamma, beta, eps=1e-5):
    """(x - mean) / sqrt(biased var + eps) * gamma + beta, in float64."""
    x = x.double()
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    g = gamma.double().reshape(*gamma.shape, 1, 1) if gamma.dim() <= 2 else gamma.double()
    b = beta.double().reshape(*beta.shape, 1, 1) if beta.dim() <= 2 else beta.double()
    return (x - mean) / torch.sqrt(var + eps) * g + b


@pytest.mark.parametrize("shape", ["per_sample", "shared", "spatial"])
def test_external_scale_shift_matches_the_definition(shape):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 7, 6) * 3 + 2
    g_shape = {"per_sample": (3, 5), "shared": (5,), "spatial": (3, 5, 7, 6)}[shape]
    gamma, beta = torch.rand(g_shape) + 0.5, torch.randn(g_shape)
    out = conditional_instance_norm(x, gamma, beta, eps=1e-5)
    torch.testing.assert_close(out.double(), _definition(x, gamma, beta), atol=1e-5, rtol=1e-5)
    # channels_last batches and single samples take other kernels: same result
    cl = conditional_instance_norm(x.contiguous(memory_format=torch.channels_last), gamma, beta)
    torch.testing.assert_close(cl, out, atol=1e-5, rtol=1e-5)
    one = conditional_instance_norm(x[1:2], gamma[1:2] if gamma.dim() > 1 else gamma,
                                    beta[1:2] if beta.dim() > 1 else beta)
    torch.testing.assert_close(one, out[1:2], atol=1e-5, rtol=1e-5)
    layer = ConditionalInstanceNorm(5)  # num_styles=None: no parameters of its own
    assert sum(p.numel() for p in layer.parameters()) == 0
    torch.testing.assert_close(layer(x, gamma=gamma, beta=beta), out)


def test_per_sample_parameters_normalize_each_sample_on_its_own():
    torch.manual_seed(1)
    x, gamma, beta = torch.randn(4, 3, 5, 5), torch.rand(4, 3), torch.randn(4, 3)
    full = conditional_instance_norm(x, gamma, beta)
    torch.testing.assert_close(conditional_instance_norm(x[2:3], gamma[2:3], beta[2:3]), full[2:3])


def test_tables_equal_torch_instance_norm_with_the_style_row():
    torch.manual_seed(2)
    layer = build_norm("cond_instance", 4, num_styles=3)
    with torch.no_grad():
        layer.affine.weight.copy_(torch.rand(3, 4) + 0.5)
        layer.affine.bias.copy_(torch.randn(3, 4))
    x, idx = torch.randn(2, 4, 6, 6), torch.tensor([1, 2])
    ref = F.instance_norm(x, eps=1e-5) * layer.affine.weight[idx, :, None, None] + layer.affine.bias[idx, :, None, None]
    torch.testing.assert_close(layer(x, idx), ref, atol=1e-5, rtol=1e-5)
    # giving the row's parameters from outside is the same layer
    torch.testing.assert_close(layer(x, gamma=layer.affine.weight[idx], beta=layer.affine.bias[idx]), layer(x, idx))


def test_moments_override_replaces_the_statistics():
    torch.manual_seed(3)
    x, other = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4) * 2 + 1
    gamma, beta = torch.rand(2, 3), torch.randn(2, 3)
    mean, rstd = instance_moments(other)
    expected = (x - mean) * rstd * gamma[..., None, None] + beta[..., None, None]
    torch.testing.assert_close(conditional_instance_norm(x, gamma, beta, moments=(mean, rstd)), expected)


def test_low_precision_input_keeps_float32_statistics():
    torch.manual_seed(4)
    x = (torch.randn(2, 8, 16, 16) * 0.1 + 20).bfloat16()  # mean >> std: bf16 stats would fail
    gamma, beta = torch.ones(2, 8), torch.zeros(2, 8)
    out = conditional_instance_norm(x, gamma, beta)
    assert out.dtype == torch.bfloat16
    ref = _definition(x.float(), gamma, beta)
    assert (out.double() - ref).abs().max() < 0.05  # bf16 output rounding only
    mean, rstd = instance_moments(x)
    assert mean.dtype == torch.float32 and rstd.dtype == torch.float32


def test_gradients_reach_parameters_given_from_outside():
    torch.manual_seed(5)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    gamma = torch.rand(2, 3, requires_grad=True)
    beta = torch.randn(2, 3, requires_grad=True)
    (conditional_instance_norm(x, gamma, beta) * torch.randn(2, 3, 4, 4)).sum().backward()
    assert gamma.grad.abs().sum() > 0 and beta.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, call, match", [
    ({}, dict(style=torch.tensor([0])), "no style tables"),
    ({}, dict(), "needs a style"),
    ({"num_styles": 2}, dict(gamma=torch.ones(1, 3)), "both gamma and beta"),
    ({"num_styles": 2}, dict(style=torch.tensor([0]), gamma=torch.ones(1, 3), beta=torch.zeros(1, 3)), "not both"),
    ({}, dict(gamma=torch.ones(1, 4), beta=torch.zeros(1, 4)), "gamma must be"),
    ({}, dict(gamma=torch.ones(1, 4, 4, 4), beta=torch.zeros(1, 4, 4, 4)), "must be"),
])
def test_misuse_is_named(kwargs, call, match):
    layer = ConditionalInstanceNorm(3, **kwargs)
    with pytest.raises(ValueError, match=match):
        layer(torch.randn(1, 3, 4, 4), **call)

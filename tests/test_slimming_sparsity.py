"""Sparsity training: s * sign(gamma) lands exactly on every BN scale's gradient."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from normapps.models import build_classifier
from normapps.tasks.slimming.sparsity import BNSparsity, add_bn_l1_subgradient


def _grads(model, x, y):
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("arch", ["vgg11", "cifar_resnet"])
def test_subgradient_added_exactly(arch):
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=10, width_mult=0.125, width=4, depth=8)
    with torch.no_grad():  # mixed signs, including an exact zero (sign 0 adds nothing)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in bns:
            bn.weight.uniform_(-1, 1)
        bns[0].weight[0] = 0.0
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    plain = _grads(model, x, y)
    _grads(model, x, y)
    s = 3e-3
    assert add_bn_l1_subgradient(model, s) == len(bns)
    names = {m: n for n, m in model.named_modules()}
    for bn in bns:
        key = f"{names[bn]}.weight"
        expected = plain[key] + s * torch.sign(bn.weight.detach())
        torch.testing.assert_close(bn.weight.grad, expected, rtol=0, atol=1e-7)
        # shifts and every non-BN parameter are untouched
        torch.testing.assert_close(bn.bias.grad, plain[f"{names[bn]}.bias"], rtol=0, atol=0)
    conv = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    torch.testing.assert_close(model.get_submodule(conv).weight.grad, plain[f"{conv}.weight"], rtol=0, atol=0)


def test_callback_splits_over_gradient_accumulation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model[1].weight.data = torch.tensor([0.5, -0.5, 2.0, -3.0])
    model[1].weight.grad = torch.zeros(4)
    cb = BNSparsity(s=0.1)
    cb.on_after_backward(SimpleNamespace(accumulate_grad_batches=2), model)
    torch.testing.assert_close(model[1].weight.grad, torch.tensor([0.05, -0.05, 0.05, -0.05]))


def test_bad_options_and_models_rejected():
    with pytest.raises(ValueError, match="slimming.s"):
        BNSparsity(s=-1.0)
    no_bn = build_classifier("vgg11", num_classes=10, norm="group", norm_kwargs={"num_groups": 4},
                             width_mult=0.125)
    with pytest.raises(ValueError, match="BatchNorm"):
        BNSparsity(s=1e-4).on_fit_start(None, no_bn)

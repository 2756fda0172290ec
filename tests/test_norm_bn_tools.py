import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from normapps.norm import bn_modules, fold_bn, freeze_bn, recalibrate_bn, unfreeze_bn


def _randomize_bn(model):
    with torch.no_grad():
        for _, bn in bn_modules(model):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            if bn.affine:
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
    return model


class Block(nn.Module):
    """ResNet-style block: bn1 is not next to conv1 in any Sequential."""

    def __init__(self, c=6):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.relu = nn.ReLU()
        self.bn2 = nn.BatchNorm2d(c)
        self.bn1 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6, 5), nn.BatchNorm1d(5))

    def forward(self, x):
        if x.sum() > 1e9:  # data-dependent control flow defeats fx
            return x
        return self.head(self.body(x))


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 1, bias=False),
                           nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 5), nn.BatchNorm1d(5)), (2, 3, 8, 8)),
    (lambda: Block(), (2, 6, 5, 5)),
    (lambda: Untraceable(), (2, 3, 8)),
    (lambda: torchvision.models.resnet18(num_classes=10), (2, 3, 32, 32)),
])
def test_fold_bn_equal_outputs_and_no_bn_left(make, shape):
    torch.manual_seed(0)
    model = _randomize_bn(make()).train()
    x = torch.randn(*shape)
    folded = fold_bn(model)
    assert type(folded) is type(model) and not folded.training
    assert model.training and bn_modules(model)  # original untouched
    assert bn_modules(folded) == []
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_fold_bn_keeps_bn_whose_producer_is_shared():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # conv output used twice: folding would change y

    model = _randomize_bn(Shared()).eval()
    x = torch.randn(2, 3, 4, 4)
    folded = fold_bn(model)
    assert len(bn_modules(folded)) == 1
    torch.testing.assert_close(folded(x), model(x))


def test_recalibrate_bn_population_stats_unequal_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.Dropout(0.5), nn.BatchNorm2d(4))
    model.eval()
    model[2].train()  # a non-BN module in train mode must stay so
    params = copy.deepcopy(model.state_dict())
    batches = [(torch.randn(n, 3, 4, 4) * 2 + 3, torch.zeros(n)) for n in (5, 2, 9)]
    recalibrate_bn(model, batches)
    data = torch.cat([b[0] for b in batches]).transpose(0, 1).reshape(3, -1)
    bn = model[0]
    torch.testing.assert_close(bn.running_mean, data.mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_var, data.var(1, unbiased=True), atol=1e-4, rtol=1e-4)
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 3
    assert not model.training and not bn.training and model[2].training
    for k, v in model.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(v, params[k])
    # torch's cumulative average would weight batches equally: make sure that differs here
    equal_weight = torch.stack([b[0].transpose(0, 1).reshape(3, -1).mean(1) for b in batches]).mean(0)
    assert (equal_weight - data.mean(1)).abs().max() > 1e-3


def test_recalibrate_bn_alpha_forward_fn_and_frozen():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.fill_(10.0)
        bn.running_var.fill_(4.0)
    src_mean = bn.running_mean.clone()
    freeze_bn(model)
    zs = [torch.randn(16, 4) for _ in range(2)]
    recalibrate_bn(model, zs, forward_fn=lambda m, z: m(z), alpha=0.25, max_batches=1)
    target = model[0](zs[0]).detach().mean(0)
    torch.testing.assert_close(bn.running_mean, 0.25 * target + 0.75 * src_mean, atol=1e-5, rtol=1e-5)
    assert bn._normapps_frozen and not bn.weight.requires_grad  # freeze state restored


def test_freeze_bn_survives_train_and_unfreeze():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    freeze_bn(model)
    model.train()
    bn = model[1]
    rm = bn.running_mean.clone()
    x = torch.randn(4, 3, 5, 5) + 2
    y = model(x)
    torch.testing.assert_close(bn.running_mean, rm)  # no update
    model.eval()
    torch.testing.assert_close(model(x), y)  # used running stats in "train"
    assert not bn.weight.requires_grad and not bn.bias.requires_grad
    assert model[0].weight.requires_grad
    frozen_copy = copy.deepcopy(model).train()
    frozen_copy(x)
    torch.testing.assert_close(frozen_copy[1].running_mean, rm)
    unfreeze_bn(model)
    model.train()
    model(x)
    assert not torch.allclose(bn.running_mean, rm)
    assert bn.weight.requires_grad
    freeze_bn(model, freeze_affine=False)
    assert bn.weight.requires_grad


def test_bn_modules_finds_private_and_subclass_bns():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Sequential(nn.BatchNorm2d(2)), nn.LayerNorm(3))
    names = [n for n, _ in bn_modules(model)]
    assert names == ["0", "1.0"]
    assert all(isinstance(m, _BatchNorm) for _, m in bn_modules(model))


def test_fold_bn_leaves_domain_branches_alone():
    from normapps.norm import convert_to_domain_bn, domain_context

    torch.manual_seed(0)
    model = convert_to_domain_bn(_randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))), 2)
    with torch.no_grad():
        model[1].bns[1].running_mean.add_(1.0)
    model.eval()
    folded = fold_bn(model)
    assert len(bn_modules(folded)) == 2
    x = torch.randn(2, 3, 4, 4)
    for d in (0, 1):
        with domain_context(model, d), domain_context(folded, d):
            torch.testing.assert_close(folded(x), model(x))

import copy

import pytest
import torch
from torch import nn

from normapps.norm import (
    DomainBatchNorm, bn_modules, build_norm, convert_to_domain_bn, domain_context, set_domain,
)


def test_mixed_batch_routes_per_sample():
    torch.manual_seed(0)
    m = build_norm("domain_batch", 3, num_domains=3)
    with torch.no_grad():
        for i, bn in enumerate(m.bns):
            bn.weight.fill_(i + 1.0)
    ref = copy.deepcopy(m)
    x = torch.randn(7, 3, 4, 4) + torch.arange(7.0)[:, None, None, None]
    dom = torch.tensor([2, 0, 2, 0, 0, 2, 2])  # domain 1 absent
    y = m(x, dom)
    for d in (0, 2):
        idx = (dom == d).nonzero().squeeze(1)
        torch.testing.assert_close(y[idx], ref.bns[d](x[idx]))
        torch.testing.assert_close(m.bns[d].running_mean, ref.bns[d].running_mean)
        torch.testing.assert_close(m.bns[d].running_var, ref.bns[d].running_var)
    assert int(m.bns[1].num_batches_tracked) == 0
    assert not torch.allclose(m.bns[0].running_mean, m.bns[2].running_mean)
    y.sum().backward()  # gradients flow back through the scatter
    assert m.bns[0].weight.grad is not None and m.bns[1].weight.grad is None


def test_int_domain_current_domain_and_context():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 1), build_norm("domain_batch", 3, num_domains=2))
    dbn = net[1]
    x = torch.randn(4, 2, 3, 3)
    net(x)  # default current_domain 0
    assert int(dbn.bns[0].num_batches_tracked) == 1 and int(dbn.bns[1].num_batches_tracked) == 0
    with domain_context(net, 1):
        assert dbn.current_domain == 1
        net(x)
    assert dbn.current_domain == 0 and int(dbn.bns[1].num_batches_tracked) == 1
    set_domain(net, torch.tensor([0, 1, 1, 0]))
    net(x)
    assert int(dbn.bns[0].num_batches_tracked) == 2 and int(dbn.bns[1].num_batches_tracked) == 2
    dbn.eval()
    h = net[0](x)
    torch.testing.assert_close(dbn(h, 1), dbn.bns[1](h))
    assert not torch.allclose(dbn(h, 1), dbn(h, 0))
    with pytest.raises(ValueError):
        dbn(h, torch.tensor([0, 1]))


def test_convert_to_domain_bn_copies_and_is_bn_tool_visible():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 9, 3), nn.BatchNorm1d(3))
    model(torch.randn(8, 2, 3, 3))
    model.eval()
    x = torch.randn(5, 2, 3, 3)
    ref = model(x)
    orig_bn = model[1]
    convert_to_domain_bn(model, 2)
    assert isinstance(model[1], DomainBatchNorm) and isinstance(model[4], DomainBatchNorm)
    assert type(model[4].bns[0]) is nn.BatchNorm1d
    torch.testing.assert_close(model[1].bns[1].running_mean, orig_bn.running_mean)
    assert model[1].bns[1].running_mean is not model[1].bns[0].running_mean
    for d in (0, 1):
        with domain_context(model, d):
            torch.testing.assert_close(model(x), ref)
    assert len(bn_modules(model)) == 4
    convert_to_domain_bn(model, 2)  # idempotent: branches are not wrapped again
    assert type(model[1].bns[0]) is nn.BatchNorm2d

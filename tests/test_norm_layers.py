import pytest
import torch
from torch import nn

from normapps.norm import build_norm


def _group_cov(y, group_size):
    n, c = y.shape[:2]
    g = y.reshape(n, c // group_size, group_size, -1).permute(1, 2, 0, 3).reshape(c // group_size, group_size, -1)
    g = g - g.mean(-1, keepdim=True)
    return g @ g.transpose(1, 2) / g.shape[-1]


def _correlated(n=64, c=8):
    torch.manual_seed(0)
    mix = torch.randn(c, c) + 2 * torch.eye(c)
    z = torch.randn(n, 4, 4, c) @ mix.T
    return z.permute(0, 3, 1, 2).contiguous() + 3


@pytest.mark.parametrize("kind,kw,tol", [
    ("batch_whiten", {}, 1e-3),
    ("iter_norm", {"iterations": 20}, 1e-3),  # many steps: stays stable
])
def test_whitening_covariance_identity_in_train(kind, kw, tol):
    x = _correlated()
    assert (_group_cov(x, 4) - torch.eye(4)).abs().max() > 0.5  # input is far from white
    m = build_norm(kind, 8, group_size=4, **kw)
    y = m(x)
    cov = _group_cov(y, 4)
    assert (cov - torch.eye(4)).abs().max() < tol
    y.square().mean().backward()  # autograd through eigh / Newton works
    assert m.affine.weight.grad is not None


def test_iter_norm_matches_paper_iteration():
    torch.manual_seed(0)
    a = torch.randn(2, 4, 50, dtype=torch.float64)
    cov = a @ a.transpose(1, 2) / 50
    m = build_norm("iter_norm", 8, group_size=4, iterations=4)
    tr = cov.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None]
    p = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
    for _ in range(4):  # Huang et al. 2019, Algorithm 1
        p = 1.5 * p - 0.5 * torch.matrix_power(p, 3) @ (cov / tr)
    torch.testing.assert_close(m._inverse_sqrt(cov), p / tr.sqrt())


def test_iter_norm_few_iterations_only_partially_whitens():
    x = _correlated()
    y = build_norm("iter_norm", 8, group_size=4, iterations=1)(x)
    assert (_group_cov(y, 4) - torch.eye(4)).abs().max() > 5e-2


@pytest.mark.parametrize("kind", ["batch_whiten", "iter_norm"])
def test_whitening_eval_uses_running_stats(kind):
    x = _correlated()
    m = build_norm(kind, 8, group_size=4, momentum=1.0)  # momentum 1: running = last batch
    y_train = m(x)
    m.eval()
    torch.testing.assert_close(m(x), y_train, atol=1e-4, rtol=1e-4)
    # eval output of a single sample does not depend on the batch
    torch.testing.assert_close(m(x[:1]), y_train[:1], atol=1e-4, rtol=1e-4)
    m2 = build_norm(kind, 8, group_size=4)
    m2.eval()  # untrained: identity whitening, zero mean
    torch.testing.assert_close(m2(x), x)


def test_cond_batch_outputs_differ_per_class():
    torch.manual_seed(0)
    m = build_norm("cond_batch", 4, num_classes=3)
    x = torch.randn(2, 4, 3, 3)
    same = m(x, torch.tensor([0, 0]))
    torch.testing.assert_close(same, m(x, torch.tensor([1, 1])))  # equal tables at init
    torch.testing.assert_close(same, nn.BatchNorm2d(4, affine=False)(x))
    with torch.no_grad():
        m.affine.weight[1].fill_(2.0)
        m.affine.bias[1].fill_(0.5)
    y0, y1 = m(x, torch.tensor([0, 0])), m(x, torch.tensor([1, 1]))
    torch.testing.assert_close(y1, 2 * y0 + 0.5)
    assert m.affine.weight[0].eq(1).all() and m.affine.bias[0].eq(0).all()


def test_cond_batch_dim1():
    m = build_norm("cond_batch", 4, num_classes=2, dim=1)
    assert isinstance(m.bn, nn.BatchNorm1d)
    assert m(torch.randn(5, 4), torch.zeros(5, dtype=torch.long)).shape == (5, 4)


def test_cond_instance_index_onehot_and_mixing():
    torch.manual_seed(0)
    m = build_norm("cond_instance", 4, num_styles=3)
    with torch.no_grad():
        m.affine.weight.copy_(torch.rand(3, 4) + 0.5)
        m.affine.bias.copy_(torch.randn(3, 4))
    x = torch.randn(2, 4, 5, 5)
    idx = torch.tensor([2, 0])
    onehot = nn.functional.one_hot(idx, 3).float()
    torch.testing.assert_close(m(x, idx), m(x, onehot))
    w = torch.tensor([[0.25, 0.0, 0.75], [0.25, 0.0, 0.75]])
    mixed = m(x, w)
    a = m(x, torch.tensor([0, 0]))
    c = m(x, torch.tensor([2, 2]))
    torch.testing.assert_close(mixed, 0.25 * a + 0.75 * c)
    assert not torch.allclose(a, c)
    # per-sample instance statistics: each sample normalized on its own
    torch.testing.assert_close(m(x[:1], idx[:1]), m(x, idx)[:1])


def test_self_mod_starts_as_bn_and_depends_on_z():
    torch.manual_seed(0)
    m = build_norm("self_mod", 4, z_dim=6, hidden_dim=8)
    gamma, beta = m.mlp(torch.randn(3, 6)).chunk(2, dim=1)
    torch.testing.assert_close(gamma, torch.ones_like(gamma))
    torch.testing.assert_close(beta, torch.zeros_like(beta))
    x, z = torch.randn(3, 4, 2, 2), torch.randn(3, 6)
    torch.testing.assert_close(m(x, z), nn.BatchNorm2d(4, affine=False)(x))
    (m(x, z) * torch.randn(3, 4, 2, 2)).sum().backward()
    assert m.mlp[-1].weight.grad.abs().sum() > 0  # z can learn to modulate
    with torch.no_grad():
        m.mlp[-1].weight.normal_()
    assert not torch.allclose(m(x, z), m(x, torch.randn(3, 6)))
    assert isinstance(build_norm("self_mod", 4, z_dim=6, hidden_dim=None).mlp, nn.Linear)

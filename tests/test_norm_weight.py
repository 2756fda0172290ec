import torch
from torch import nn
from torch.nn.utils import parametrize

from normapps.norm import apply_spectral_norm, apply_weight_norm, spectral_norm_estimates


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.ConvTranspose2d(8, 4, 3), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
    )


def test_spectral_norm_gives_unit_sigma_after_power_iterations():
    net = _net()
    emb = nn.Embedding(7, 5)
    model = nn.ModuleDict({"net": net, "emb": emb})
    with torch.no_grad():  # default inits have sigma < 1: make normalization visible
        for p in model.parameters():
            p.mul_(3.0)
    before = spectral_norm_estimates(net)
    assert max(before.values()) > 1.5
    apply_spectral_norm(model, n_power_iterations=1)
    for m in (net[0], net[2], net[4], emb):
        assert parametrize.is_parametrized(m, "weight")
        assert type(m.parametrizations.weight[0]).__name__ == "_SpectralNorm"
    x = torch.randn(2, 3, 6, 6)
    for _ in range(15):
        net(x)
    est = spectral_norm_estimates(net)
    assert set(est) == {"0", "2", "4"}
    for name, sigma in est.items():
        assert abs(sigma - 1.0) < 2e-2, (name, sigma)
    for _ in range(15):
        emb(torch.tensor([0, 3]))
    assert abs(float(torch.linalg.matrix_norm(emb.weight.detach(), ord=2)) - 1) < 2e-2
    apply_spectral_norm(model)  # idempotent: no second parametrization stacked
    assert len(net[0].parametrizations.weight) == 1


def test_spectral_norm_estimates_do_not_advance_power_iteration():
    net = apply_spectral_norm(_net())
    u = net[0].parametrizations.weight[0]._u.clone()
    spectral_norm_estimates(net)
    torch.testing.assert_close(net[0].parametrizations.weight[0]._u, u)
    assert net.training


def test_weight_norm_applied_and_preserves_function():
    net = _net()
    x = torch.randn(2, 3, 6, 6)
    ref = net(x)
    apply_weight_norm(net)
    for i in (0, 2, 4):
        assert parametrize.is_parametrized(net[i], "weight")
        assert hasattr(net[i].parametrizations.weight, "original0")
    torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=1e-5)

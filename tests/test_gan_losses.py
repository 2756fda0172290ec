"""GAN losses on known inputs."""
import math

import pytest
import torch

from normapps.tasks.gan.losses import d_loss, g_loss, gradient_penalty


def test_hinge_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1-2)=0, relu(1-.5)=.5 -> .25 ; relu(1-2)=0, relu(1+0)=1 -> .5
    assert d_loss("hinge", real, fake).item() == pytest.approx(0.75)
    assert g_loss("hinge", fake).item() == pytest.approx(1.0)


def test_non_saturating_values():
    real, fake = torch.zeros(3), torch.zeros(3)
    assert d_loss("ns", real, fake).item() == pytest.approx(2 * math.log(2))
    assert g_loss("ns", torch.tensor([0.0])).item() == pytest.approx(math.log(2))
    # Large confident scores: no overflow, loss near 0.
    assert d_loss("ns", torch.tensor([50.0]), torch.tensor([-50.0])).item() == pytest.approx(0, abs=1e-6)


def test_wgan_values_and_penalty():
    assert d_loss("wgan_gp", torch.tensor([3.0, 1.0]), torch.tensor([0.0, 1.0])).item() == pytest.approx(-1.5)
    assert g_loss("wgan_gp", torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)
    w = torch.full((1, 1, 2, 2), 1.5)  # linear critic: gradient norm is ||w|| = 3 everywhere
    gp = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2))
    assert gp.item() == pytest.approx((3.0 - 1.0) ** 2, rel=1e-5)


def test_unknown_loss():
    with pytest.raises(ValueError, match="model.loss"):
        d_loss("lsgan", torch.zeros(1), torch.zeros(1))

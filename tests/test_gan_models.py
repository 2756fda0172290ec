"""GAN networks: shapes, norms through the core, conditioning, spectral norm during training."""
import pytest
import torch

from normapps.norm import spectral_norm_estimates
from normapps.tasks.gan.discriminators import build_discriminator
from normapps.tasks.gan.generators import build_generator
from normapps.tasks.gan.losses import d_loss


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
@pytest.mark.parametrize("size", [32, 64])
def test_shapes(arch, size):
    g = build_generator(arch, z_dim=8, num_classes=0, norm="batch", image_size=size, channels=3, width=16)
    d = build_discriminator(arch, norm="spectral", num_classes=0, image_size=size, channels=3, width=16)
    x = g(torch.randn(4, 8))
    assert x.shape == (4, 3, size, size) and x.abs().max() <= 1
    assert d(x).shape == (4,)


@pytest.mark.parametrize("norm", ["batch", "cond_batch", "self_mod", "none"])
def test_g_norm_kinds(norm):
    g = build_generator("dcgan", z_dim=8, num_classes=3, norm=norm, image_size=32, channels=3, width=8)
    y = torch.tensor([0, 1, 2, 0])
    assert g(torch.randn(4, 8), y).shape == (4, 3, 32, 32)
    kinds = {type(m.norm).__name__ for m in g.modules() if hasattr(m, "kind")}
    expected = {"batch": "BatchNorm2d", "cond_batch": "ConditionalBatchNorm",
                "self_mod": "SelfModulatedBatchNorm", "none": "Identity"}[norm]
    assert kinds == {expected}


def test_cond_batch_changes_output_per_class():
    torch.manual_seed(0)
    g = build_generator("resnet", z_dim=8, num_classes=4, norm="cond_batch", image_size=32, channels=3, width=16)
    # Per-class gamma/beta start equal; make them differ as training would.
    for m in g.modules():
        if type(m).__name__ == "ConditionalAffine":
            torch.nn.init.normal_(m.weight, 1.0, 0.3)
            torch.nn.init.normal_(m.bias, 0.0, 0.3)
    g.eval()
    z = torch.randn(1, 8).expand(4, 8)
    out = g(z, torch.arange(4))
    for a in range(4):
        for b in range(a + 1, 4):
            assert (out[a] - out[b]).abs().mean() > 1e-3
    # Same class, same z: same image.
    assert torch.allclose(g(z[:2], torch.tensor([1, 1]))[0], g(z[:2], torch.tensor([1, 1]))[1])
    with pytest.raises(ValueError, match="labels"):
        g(z)


def test_self_mod_starts_as_plain_bn():
    torch.manual_seed(0)
    g = build_generator("dcgan", z_dim=8, num_classes=0, norm="self_mod", image_size=32, channels=3, width=8)
    mlp_out = [m.mlp[-1] for m in g.modules() if type(m).__name__ == "SelfModulatedBatchNorm"]
    assert mlp_out and all(torch.all(l.bias[: l.out_features // 2] == 1) for l in mlp_out)


@pytest.mark.parametrize("norm,layer", [("batch", "BatchNorm2d"), ("layer", "GroupNorm")])
def test_d_activation_norms(norm, layer):
    d = build_discriminator("resnet", norm=norm, num_classes=0, image_size=32, channels=3, width=16)
    assert any(type(m).__name__ == layer for m in d.modules())
    assert d(torch.randn(4, 3, 32, 32)).shape == (4,)


def test_projection_discriminator_uses_labels():
    torch.manual_seed(0)
    d = build_discriminator("resnet", norm="spectral", num_classes=5, image_size=32, channels=3, width=16).eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(d(x, torch.tensor([0, 0])), d(x, torch.tensor([3, 3])))
    # The class embedding is spectral-normalized as well.
    assert hasattr(d.embed, "parametrizations")
    with pytest.raises(ValueError, match="labels"):
        d(x)


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="d_norm"):
        build_discriminator("resnet", norm="group", num_classes=0, image_size=32, channels=3)
    with pytest.raises(ValueError, match="g_norm"):
        build_generator("resnet", z_dim=8, num_classes=0, norm="layer", image_size=32, channels=3)
    with pytest.raises(ValueError, match="image_size"):
        build_generator("dcgan", z_dim=8, num_classes=0, norm="batch", image_size=48, channels=3)


def test_spectral_norm_keeps_top_singular_value_near_one():
    torch.manual_seed(0)
    d = build_discriminator("dcgan", norm="spectral", num_classes=0, image_size=32, channels=3, width=8)
    opt = torch.optim.Adam(d.parameters(), lr=5e-3, betas=(0.0, 0.9))
    for _ in range(15):  # aggressive steps: the raw weights grow, the normalized ones must not
        loss = d_loss("hinge", d(torch.rand(8, 3, 32, 32)), d(torch.randn(8, 3, 32, 32)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    sigmas = spectral_norm_estimates(d)
    assert len(sigmas) >= 8
    for name, s in sigmas.items():
        assert 0.8 < s < 1.2, (name, s)
    # Without spectral norm the same layers are far from 1.
    plain = build_discriminator("dcgan", norm="none", num_classes=0, image_size=32, channels=3, width=8)
    assert max(abs(s - 1) for s in spectral_norm_estimates(plain).values()) > 0.3

"""Generator EMA (torch's AveragedModel): parameters averaged, spectral-norm u/v never averaged
(power iterations on the averaged weights instead), BN re-estimated."""
import torch

from normapps.norm import apply_spectral_norm
from normapps.tasks.gan.ema import ema_update, is_sn_vector, make_ema, recalibrate_ema_bn
from normapps.tasks.gan.generators import build_generator


def _g():
    torch.manual_seed(0)
    return build_generator("dcgan", z_dim=8, num_classes=0, norm="batch", image_size=32, channels=3, width=8)


def test_ema_averages_parameters_but_not_sn_vectors():
    g = apply_spectral_norm(_g())
    ema = make_ema(g, decay=0.75)
    sn = {n: b for n, b in g.named_buffers() if is_sn_vector(n)}
    assert sn, "spectral norm should register u/v buffers"
    before = {n: p.detach().clone() for n, p in ema.module.named_parameters()}
    before_buf = {n: b.clone() for n, b in ema.module.named_buffers()}
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    g.train()
    g(torch.randn(4, 8))  # a train forward runs a power iteration: live u/v move
    ema_update(ema, g)
    live = dict(g.named_parameters())
    for n, p in ema.module.named_parameters():
        assert torch.allclose(p, 0.75 * before[n] + 0.25 * live[n].detach(), atol=1e-6), n
    ema_buf = dict(ema.module.named_buffers())
    for n, b in sn.items():
        # Neither a 0.75/0.25 mix of two unit vectors nor the live G's estimate: a power
        # iteration on the averaged weights moved them, and they are still unit vectors.
        mix = 0.75 * before_buf[n] + 0.25 * b
        assert not torch.allclose(ema_buf[n], mix), n
        assert not torch.equal(ema_buf[n], b), n
        assert abs(float(ema_buf[n].norm()) - 1) < 1e-4
    assert not any(p.requires_grad for p in ema.parameters())


def test_ema_bn_recalibration():
    g = _g()
    ema = make_ema(g, decay=0.999)
    bn = next(m for m in ema.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.all(bn.running_var == 1)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(16, 8, generator=gen) for _ in range(3)]
    recalibrate_ema_bn(ema, batches, forward_fn=lambda m, z: m(z))
    assert not torch.all(bn.running_var == 1)
    assert not ema.training

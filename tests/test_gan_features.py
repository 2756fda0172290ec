"""GAN features users of SAGAN/BigGAN/StyleGAN2/DiffAugment expect: spectral norm in G with an
EMA whose power-iteration vectors follow the averaged weights, self-attention, R1, DiffAugment,
truncation, intra-class FID, FID against cached training statistics, the feature-net hash."""
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.optim.swa_utils import AveragedModel

from normapps.tasks.gan import GANModule
from normapps.tasks.gan.attention import SelfAttention2d
from normapps.tasks.gan.data import GANDataModule
from normapps.tasks.gan.diffaugment import DiffAugment
from normapps.tasks.gan.discriminators import build_discriminator
from normapps.tasks.gan.ema import ema_update, make_ema, refresh_spectral_vectors
from normapps.tasks.gan.generators import build_generator
from normapps.tasks.gan.losses import r1_penalty
from normapps.tasks.gan.metrics import (GANMetrics, IntraClassFID, feature_net_sha256, fid_reference_statistics,
                                        get_local_feature_net, load_fid_statistics)
from normapps.tasks.gan.module import truncated_normal
from normapps.tasks.gan.runner import trainer_overrides

TINY = dict(g_arch="dcgan", d_arch="dcgan", g_width=8, d_width=8, z_dim=16, n_dis=1, num_eval_samples=20,
            eval_batch_size=16, recal_batches=1, kid_subset_size=8, grid_size=4, local_feature_steps=2,
            local_feature_cache=None)


def _fit(module, dm, tmp_path, g_steps=2):
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                         **trainer_overrides(max_g_steps=g_steps, n_dis=module.hparams.n_dis,
                                             eval_every_g_steps=g_steps))
    trainer.fit(module, datamodule=dm)
    return trainer


@pytest.fixture(scope="module")
def digits():
    dm = GANDataModule(dataset="digits", batch_size=8, num_eval_real=40, eval_batch_size=40, num_classes=10)
    dm.setup("fit")
    return dm


def _sn_layers(model):
    return [m for m in model.modules() if parametrize.is_parametrized(m, "weight")]


# ---------------------------------------------------------------- spectral norm in G + EMA
def test_spectral_norm_in_g_skips_the_norm_layers():
    g = build_generator("resnet", z_dim=8, num_classes=3, norm="cond_batch", image_size=32, channels=3,
                        width=16, spectral_norm=True)
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert convs and all(parametrize.is_parametrized(m, "weight") for m in convs)
    # Class-conditional gains stay plain (BigGAN/SAGAN normalize the convs and linears only).
    norms = [m for m in g.modules() if type(m).__name__ == "ConditionalAffine"]
    assert norms and not any(_sn_layers(n) for n in norms)
    sm = build_generator("dcgan", z_dim=8, num_classes=0, norm="self_mod", image_size=32, channels=3,
                         width=8, spectral_norm=True)
    assert not any(_sn_layers(m) for m in sm.modules() if type(m).__name__ == "SelfModulatedBatchNorm")


def test_ema_is_an_averaged_model_whose_sn_vectors_follow_the_averaged_weights():
    torch.manual_seed(0)
    g = build_generator("dcgan", z_dim=8, num_classes=0, norm="batch", image_size=32, channels=3, width=8,
                        spectral_norm=True)
    ema = make_ema(g, decay=0.5)
    assert isinstance(ema, AveragedModel)
    before = {n: p.detach().clone() for n, p in ema.module.named_parameters()}
    ema_update(ema, g)  # first update copies (n_averaged 0), as AveragedModel does
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p))
    g.train()
    g(torch.randn(4, 8))
    ema_update(ema, g)
    live = dict(g.named_parameters())
    for n, p in ema.module.named_parameters():
        assert torch.allclose(p, 0.5 * before[n] + 0.5 * live[n].detach(), atol=1e-5), n
    refresh_spectral_vectors(ema, n_power_iterations=200)
    for (name, m_ema), m_live in zip(((n, m) for n, m in ema.module.named_modules() if m in _sn_layers(ema.module)),
                                     _sn_layers(g)):
        sn = m_ema.parametrizations.weight[0]
        w = sn._reshape_weight_to_matrix(m_ema.parametrizations.weight.original)
        sigma_est = torch.dot(sn._u, w @ sn._v)
        sigma = torch.linalg.matrix_norm(w, ord=2)
        # The EMA's estimate is of its own (averaged) weights, not a copy of the live G's vectors.
        assert float(sigma_est) == pytest.approx(float(sigma), rel=5e-3), name
        assert not torch.allclose(sn._u, m_live.parametrizations.weight[0]._u)
    assert not any(p.requires_grad for p in ema.parameters())


def test_old_checkpoints_with_a_hand_written_ema_still_load(digits, tmp_path):
    module = GANModule(**TINY, num_classes=0)
    state = module.state_dict()
    old = {k.replace("G_ema.module.", "G_ema."): v for k, v in state.items() if k != "G_ema.n_averaged"}
    again = GANModule.from_checkpoint_dict({"hyper_parameters": dict(module.hparams), "state_dict": old})
    assert torch.equal(again.G_ema.module.fc.weight, module.G_ema.module.fc.weight)


def test_module_with_sn_g_trains_and_logs(digits, tmp_path):
    torch.manual_seed(0)
    module = GANModule(**TINY, num_classes=0, g_spectral_norm=True, max_g_steps=2)
    trainer = _fit(module, digits, tmp_path)
    assert _sn_layers(module.G) and _sn_layers(module.G_ema.module)
    assert torch.isfinite(trainer.callback_metrics["val/fid_local"])


# ---------------------------------------------------------------- self-attention
def test_self_attention_starts_as_identity_and_learns_its_gate():
    torch.manual_seed(0)
    att = SelfAttention2d(16)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(att(x), x)  # gamma = 0 at init (SAGAN)
    att(x).sum().backward()
    assert att.gamma.grad is not None and att.gamma.grad.abs() > 0


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_self_attention_sits_at_the_requested_resolution(arch):
    g = build_generator(arch, z_dim=8, num_classes=0, norm="batch", image_size=32, channels=3, width=16,
                        attention_size=16)
    d = build_discriminator(arch, norm="spectral", num_classes=0, image_size=32, channels=3, width=16,
                            attention_size=16)
    seen = []
    for net in (g, d):
        blocks = [m for m in net.modules() if isinstance(m, SelfAttention2d)]
        assert len(blocks) == 1
        blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-1]))
    d(g(torch.randn(2, 8)))
    assert seen == [16, 16]
    # In the SN discriminator the attention's 1x1 convs are spectral-normalized too.
    assert all(parametrize.is_parametrized(c, "weight") for c in d.modules()
               if isinstance(c, nn.Conv2d) and c.kernel_size == (1, 1) and c.out_channels < 16)
    with pytest.raises(ValueError, match="gan.attention_size"):
        build_generator(arch, z_dim=8, num_classes=0, norm="batch", image_size=32, channels=3, width=16,
                        attention_size=12)


# ---------------------------------------------------------------- R1 and DiffAugment
def test_r1_penalty_of_a_linear_critic():
    w = torch.full((1, 1, 2, 2), 1.5)  # gradient w everywhere: ||w||^2 = 9
    r1 = r1_penalty(lambda x: (x * w).flatten(1).sum(1), torch.randn(4, 1, 2, 2))
    assert r1.item() == pytest.approx(9.0, rel=1e-5)
    assert r1.requires_grad is False or r1.grad_fn is not None


def test_r1_in_training_and_refused_with_batch_norm_in_d(digits, tmp_path):
    torch.manual_seed(0)
    module = GANModule(**TINY, num_classes=0, r1_gamma=1.0, max_g_steps=1)
    trainer = _fit(module, digits, tmp_path, g_steps=1)
    assert float(trainer.callback_metrics["train/r1"]) > 0
    with pytest.raises(ValueError, match="r1_gamma"):
        GANModule(**TINY, num_classes=0, r1_gamma=1.0, d_norm="batch")


def test_diffaugment_policies():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert torch.equal(DiffAugment("")(x), x)
    cut = DiffAugment("cutout")(x)
    # Each image loses one 8x8 square (half the side; at least a quarter of it inside the image).
    assert all(16 <= int((c == 0).all(0).sum()) <= 64 for c in cut)
    moved = DiffAugment("translation")(x)
    assert moved.shape == x.shape and not torch.equal(moved, x)
    xg = x.clone().requires_grad_(True)
    DiffAugment("color,translation,cutout")(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0  # differentiable, G learns through it
    with pytest.raises(ValueError, match="gan.diffaugment"):
        DiffAugment("color,flip")


def test_diffaugment_reaches_the_discriminator(digits, tmp_path):
    torch.manual_seed(0)
    module = GANModule(**TINY, num_classes=0, diffaugment="cutout", max_g_steps=1)
    holes = []
    module.D.register_forward_pre_hook(
        lambda m, a: holes.append(bool(((a[0] == 0).all(1).flatten(1).sum(1) >= 64).all())) if m.training else None)
    _fit(module, digits, tmp_path, g_steps=1)
    assert holes and all(holes)


# ---------------------------------------------------------------- truncation
def test_truncated_normal_resamples_outside_the_band():
    z = truncated_normal(2000, 8, psi=0.5, generator=torch.Generator().manual_seed(0))
    assert z.abs().max() <= 0.5 and z.std() < 0.35  # resampled, not clipped: no mass piled at 0.5
    assert (z.abs() > 0.49).float().mean() < 0.02
    with pytest.raises(ValueError, match="truncation"):
        truncated_normal(4, 8, psi=0.0)


# ---------------------------------------------------------------- metrics
@pytest.fixture(scope="module")
def local_net(digits):
    x, y = digits.real_tensors()
    return get_local_feature_net(x, y, steps=20, seed=0, cache_dir=None), x, y


def test_intra_class_fid_matches_classes(local_net):
    net, x, y = local_net
    with torch.no_grad():
        feats = net(x[:600])[0]
    labels = y[:600]
    matched, shuffled = IntraClassFID(num_classes=10, num_features=128), IntraClassFID(num_classes=10, num_features=128)
    for m, fake_labels in ((matched, labels[300:]), (shuffled, labels[300:][torch.randperm(300)])):
        m.update(feats[:300], labels[:300], real=True)
        m.update(feats[300:], fake_labels, real=False)
    assert matched.compute() < 0.5 * shuffled.compute()


def test_feature_net_hash_names_the_network(local_net, digits):
    net, x, y = local_net
    h = feature_net_sha256(net)
    assert len(h) == 64 and h == feature_net_sha256(net)
    other = get_local_feature_net(x, y, steps=20, seed=1, cache_dir=None)
    assert feature_net_sha256(other) != h


def test_fid_against_cached_training_statistics(local_net, tmp_path):
    net, x, _ = local_net
    stats, info = fid_reference_statistics(net, x, cache_dir=tmp_path, batch_size=256)
    assert info["cached"] is False and info["num_images"] == len(x)
    again, info2 = fid_reference_statistics(net, x, cache_dir=tmp_path, batch_size=256)
    assert info2["cached"] is True and info2["cache_file"] == info["cache_file"]
    assert np.allclose(stats["mu"], again["mu"]) and np.allclose(stats["sigma"], again["sigma"])
    torch.load(info["cache_file"], weights_only=True)  # the cache is plain tensors
    m = GANMetrics(net, suffix="_local", with_is=False, kid_subset_size=50, reference_stats=stats)
    m.update(x[:100], real=True)
    m.update(x[100:400], real=False)
    real_like = m.compute()["fid_local"]
    m.reset_fake()
    m.update(torch.rand(300, 3, 32, 32), real=False)
    assert real_like < m.compute()["fid_local"]


def test_user_statistics_file_is_checked(tmp_path):
    path = tmp_path / "stats.npz"
    np.savez(path, mu=np.zeros(64), sigma=np.eye(64))
    with pytest.raises(ValueError, match="gan.fid_stats.*128"):
        load_fid_statistics(path, num_features=128)
    stats = load_fid_statistics(path, num_features=64)
    assert stats["sigma"].shape == (64, 64)
    with pytest.raises(FileNotFoundError, match="gan.fid_stats"):
        load_fid_statistics(tmp_path / "missing.npz", num_features=64)


def test_conditional_module_logs_intra_fid(digits, tmp_path):
    torch.manual_seed(0)
    module = GANModule(**TINY, num_classes=10, conditional=True, g_norm="cond_batch", intra_fid=True,
                       max_g_steps=1)
    trainer = _fit(module, digits, tmp_path, g_steps=1)
    assert torch.isfinite(trainer.callback_metrics["val/intra_fid_local"])
    assert len(module.feature_net_info["sha256"]) == 64
    with pytest.raises(ValueError, match="intra_fid"):
        GANModule(**TINY, num_classes=0, intra_fid=True)

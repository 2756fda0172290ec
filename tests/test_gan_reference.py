"""The GAN task against its references (pfnet SN-GAN, StudioGAN, WGAN-GP): the defects issue 14
lists, each checked in-process on tiny networks."""
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import TensorDataset

from normapps.tasks.gan import GANModule
from normapps.tasks.gan.data import GANDataModule
from normapps.tasks.gan.metrics import train_local_feature_net
from normapps.tasks.gan.runner import trainer_overrides

TINY = dict(g_arch="dcgan", d_arch="dcgan", g_width=8, d_width=8, z_dim=16, n_dis=1, num_eval_samples=16,
            eval_batch_size=16, recal_batches=1, kid_subset_size=8, grid_size=4, local_feature_steps=2,
            local_feature_cache=None)


def _fit(module, dm, tmp_path, g_steps=2):
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                         **trainer_overrides(max_g_steps=g_steps, n_dis=module.hparams.n_dis,
                                             eval_every_g_steps=g_steps))
    trainer.fit(module, datamodule=dm)
    return trainer


def test_local_feature_net_leaves_the_global_rng_alone():
    """Training the fid_local network must not reseed torch's global generator: runs with
    different seeds would otherwise share one stream of latents, labels and GP noise."""
    x = torch.rand(16, 3, 32, 32)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_local_feature_net(x, None, steps=2, seed=0, batch_size=8)
    assert torch.equal(torch.rand(3), expected)


@pytest.fixture
def digits_all_label_zero():
    """Digits whose labels are all 0: fake labels drawn from the real batch would all be 0."""
    dm = GANDataModule(dataset="digits", batch_size=8, num_eval_real=16, eval_batch_size=16, num_classes=10)
    dm.setup("fit")
    x, _ = dm.train_set.tensors
    dm.train_set = TensorDataset(x[:64], torch.zeros(64, dtype=torch.long))
    return dm


def test_g_batch_size_and_uniform_fake_labels_in_d_steps(digits_all_label_zero, tmp_path):
    """pfnet SN-GAN: G steps use ``g_batch_size`` samples (128 vs a D batch of 64); fakes in the
    conditional D step get labels drawn uniformly, not the real batch's."""
    torch.manual_seed(0)
    module = GANModule(**TINY, conditional=True, g_norm="cond_batch", num_classes=10, max_g_steps=3,
                       g_batch_size=12)
    calls = []

    def spy(_, args):
        if module.training or torch.is_grad_enabled():
            calls.append((torch.is_grad_enabled(), args[0].shape[0], args[1].clone()))

    module.G.register_forward_pre_hook(spy)
    _fit(module, digits_all_label_zero, tmp_path, g_steps=3)
    d_calls = [c for c in calls if not c[0]]
    g_calls = [c for c in calls if c[0]]
    assert g_calls and all(n == 12 for _, n, _ in g_calls)
    assert d_calls and all(n == 8 for _, n, _ in d_calls)
    d_labels = torch.cat([y for *_, y in d_calls])
    assert (d_labels != 0).any(), "D-step fakes took the real batch's labels"


def test_wgan_gp_with_batch_norm_in_d_is_refused():
    with pytest.raises(ValueError, match="wgan_gp.*d_norm=batch|d_norm=batch.*wgan_gp"):
        GANModule(**TINY, loss="wgan_gp", d_norm="batch", num_classes=0)

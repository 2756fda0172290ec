"""GANModule in-process (no subprocess): bf16-mixed, ns loss, self-modulated G, BN in D, clipping."""
import pytorch_lightning as pl
import torch

from normapps.tasks.gan import GANModule
from normapps.tasks.gan.data import GANDataModule
from normapps.tasks.gan.runner import trainer_overrides


def test_bf16_ns_self_mod_batch_d_with_clipping(tmp_path):
    torch.manual_seed(0)
    dm = GANDataModule(dataset="faces", batch_size=8, num_eval_real=16, eval_batch_size=16, num_classes=0)
    module = GANModule(g_arch="dcgan", d_arch="dcgan", g_width=8, d_width=8, z_dim=16, g_norm="self_mod",
                       d_norm="batch", loss="ns", n_dis=2, max_g_steps=2, num_eval_samples=16,
                       eval_batch_size=16, recal_batches=1, kid_subset_size=8, grid_size=4,
                       local_feature_steps=2, grad_clip=0.5, num_classes=0)
    trainer = pl.Trainer(default_root_dir=tmp_path, precision="bf16-mixed", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=1,
                         enable_model_summary=False,
                         **trainer_overrides(max_g_steps=2, n_dis=2, eval_every_g_steps=2))
    trainer.fit(module, datamodule=dm)
    assert int(module.g_steps) == 2 and int(module.d_steps) == 4 and trainer.global_step == 6
    m = trainer.callback_metrics
    assert torch.isfinite(m["val/fid_local"]) and "val/is_local" not in m  # unlabelled: rotation features, no IS
    assert all(torch.isfinite(p).all() for p in module.G.parameters())
    # Linear decay reached 0 at max_g_steps.
    assert module.optimizers()[0].param_groups[0]["lr"] == 0.0
    assert list((tmp_path / "images").glob("val_samples_*.png"))

import pytorch_lightning as pl
import torch
from torch import nn

from normapps.norm import ScaleInvarianceMonitor, build_norm, scale_invariant_layers, snd


def _features():
    torch.manual_seed(0)
    return torch.randn(64, 4, 3, 3) * torch.rand(64, 1, 1, 1) * 3 + torch.randn(64, 1, 1, 1)


def test_snd_zero_for_batch_independent_layers():
    feats = _features()
    for kind in ("group", "layer", "instance"):
        layer = build_norm(kind, 4, **({"num_groups": 2} if kind == "group" else {}))
        assert snd(layer, feats, batch_size=4, generator=torch.Generator().manual_seed(0)) < 1e-4


def test_snd_bn_grows_as_batch_shrinks_and_keeps_stats():
    feats = _features()
    bn = nn.BatchNorm2d(4).eval()
    g = torch.Generator().manual_seed(0)
    small = snd(bn, feats, batch_size=4, num_batches=8, generator=g)
    large = snd(bn, feats, batch_size=32, num_batches=8, generator=g)
    assert small > 2 * large > 0
    assert int(bn.num_batches_tracked) == 0 and not bn.training


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_scale_invariant_layer_detection():
    assert scale_invariant_layers(_Tiny()) == ["net.0"]
    m = nn.Sequential(nn.Linear(3, 3), build_norm("self_mod", 3, z_dim=2, dim=1))
    assert scale_invariant_layers(m) == ["0"]  # the MLP inside self_mod is not a candidate


def test_scale_invariance_monitor_logs(tmp_path):
    torch.manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(12, 3, 6, 6), torch.randint(0, 2, (12,)))
    model = _Tiny()
    trainer = pl.Trainer(
        max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[ScaleInvarianceMonitor(log_every_n_steps=1)],
        default_root_dir=tmp_path, accelerator="cpu",
    )
    trainer.fit(model, torch.utils.data.DataLoader(ds, batch_size=4))
    metrics = trainer.callback_metrics
    w = float(model.net[0].weight.detach().norm())
    assert abs(float(metrics["scale_inv/net.0/weight_norm"]) - w) < 1e-4
    assert abs(float(metrics["scale_inv/net.0/eff_lr"]) - 0.5 / w**2) < 1e-4
    assert not any("net.4" in k for k in metrics)


class _NoVmap(nn.Module):
    """BN that vmap cannot run (data-dependent Python branch): exercises the loop fallback."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        if float(x.sum()) == 1234.5:
            return x
        return self.bn(x)


def test_snd_vmap_and_loop_paths_agree():
    feats = _features()
    kw = dict(batch_size=3, num_batches=4, num_examples=4)
    a = snd(nn.BatchNorm2d(4), feats, **kw, generator=torch.Generator().manual_seed(1))
    b = snd(_NoVmap(), feats, **kw, generator=torch.Generator().manual_seed(1))
    assert a > 0.1
    assert abs(a - b) < 1e-5

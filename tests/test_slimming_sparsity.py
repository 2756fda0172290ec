"""Sparsity training: s * sign(gamma) lands exactly on every BN scale's gradient."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from normapps.models import build_classifier
from normapps.tasks.slimming.sparsity import BNSparsity, add_bn_l1_subgradient


def _grads(model, x, y):
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("arch", ["vgg11", "cifar_resnet"])
def test_subgradient_added_exactly(arch):
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=10, width_mult=0.125, width=4, depth=8)
    with torch.no_grad():  # mixed signs, including an exact zero (sign 0 adds nothing)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in bns:
            bn.weight.uniform_(-1, 1)
        bns[0].weight[0] = 0.0
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    plain = _grads(model, x, y)
    _grads(model, x, y)
    s = 3e-3
    assert add_bn_l1_subgradient(model, s) == len(bns)
    names = {m: n for n, m in model.named_modules()}
    for bn in bns:
        key = f"{names[bn]}.weight"
        expected = plain[key] + s * torch.sign(bn.weight.detach())
        torch.testing.assert_close(bn.weight.grad, expected, rtol=0, atol=1e-7)
        # shifts and every non-BN parameter are untouched
        torch.testing.assert_close(bn.bias.grad, plain[f"{names[bn]}.bias"], rtol=0, atol=0)
    conv = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    torch.testing.assert_close(model.get_submodule(conv).weight.grad, plain[f"{conv}.weight"], rtol=0, atol=0)


def test_callback_adds_the_penalty_once_per_optimizer_step():
    # Before the optimizer step the micro-batches of gradient accumulation are already summed,
    # so the penalty is added once, whole.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model[1].weight.data = torch.tensor([0.5, -0.5, 2.0, -3.0])
    model[1].weight.grad = torch.zeros(4)
    cb = BNSparsity(s=0.1)
    cb.on_before_optimizer_step(SimpleNamespace(accumulate_grad_batches=2), model, None)
    torch.testing.assert_close(model[1].weight.grad, torch.tensor([0.1, -0.1, 0.1, -0.1]))


def test_bad_options_and_models_rejected():
    with pytest.raises(ValueError, match="slimming.s"):
        BNSparsity(s=-1.0)
    no_bn = build_classifier("vgg11", num_classes=10, norm="group", norm_kwargs={"num_groups": 4},
                             width_mult=0.125)
    with pytest.raises(ValueError, match="BatchNorm"):
        BNSparsity(s=1e-4).on_fit_start(None, no_bn)


def test_penalty_is_not_shrunk_by_the_grad_scaler_under_16_mixed(tmp_path):
    """Under 16-mixed the GradScaler multiplies every gradient by its scale during backward and
    divides it out before the optimizer step: a penalty added to the still-scaled gradients
    (on_after_backward) ends up as s / scale. One SGD step (lr 1) on a loss that does not
    depend on gamma must move every gamma by exactly s."""
    import pytorch_lightning as pl
    from pytorch_lightning.plugins.precision import MixedPrecision

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(3)

        def training_step(self, batch, _):
            return (self.bn(batch[0]) * 0).sum() + (batch[0] * 0).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1.0)

    s = 0.01
    module = Tiny()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)],
                         callbacks=[BNSparsity(s=s)], default_root_dir=tmp_path)
    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 4, 4))
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    torch.testing.assert_close(module.bn.weight.detach(), torch.full((3,), 1.0 - s))

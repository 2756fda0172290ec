"""The step between QAT and int8 conversion must not undo what QAT learned."""
import pytest
import torch
from torch import nn

from normapps.data.classification import load_arrays
from normapps.models import build_classifier
from normapps.tasks.quantization import ptq
from normapps.tasks.quantization.qat import QATSchedule, finish_qat
from normapps.tasks.quantization.report import accuracy

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits16():
    x, y = load_arrays("digits", train=True, image_size=16, channels=3)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    return x[perm[:1400]], y[perm[:1400]], x[perm[1400:]], y[perm[1400:]]


def _batches(x, y, bs=64):
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]


def test_qat_accuracy_does_not_drop_at_the_finishing_step(digits16):
    xtr, ytr, xte, yte = digits16
    torch.manual_seed(0)
    model = build_classifier("small_cnn", num_classes=10, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(3):
        for xb, yb in _batches(xtr, ytr):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    model.eval()
    prepared = ptq.prepare_fx_model(model, xtr[:2], qat=True)
    opt = torch.optim.SGD(prepared.parameters(), lr=1e-3, momentum=0.9)

    class _Trainer:
        current_epoch = 0

    # One epoch, as quant.qat_epochs=1 with the default freeze epochs: BN statistics frozen at
    # epoch 1 and observers at 2 never happen inside the run.
    sched, trainer = QATSchedule(freeze_bn_epoch=1, freeze_observer_epoch=2), _Trainer()
    for epoch in range(1):
        trainer.current_epoch = epoch
        sched.on_train_epoch_start(trainer, prepared)
        prepared.train()
        for xb, yb in _batches(xtr, ytr)[:8]:
            opt.zero_grad()
            nn.functional.cross_entropy(prepared(xb), yb).backward()
            opt.step()
    test = _batches(xte, yte)
    before = accuracy(prepared.eval(), test)  # fake-quantized: what QAT trained
    assert before > 0.8
    learned = {k: v.clone() for k, v in prepared.state_dict().items()
               if k.endswith(("scale", "zero_point", "running_mean", "running_var"))}
    finish_qat(prepared, _batches(xtr, ytr), recalibrate_bn=True, max_batches=8)
    after = accuracy(prepared.eval(), test)
    # The learned ranges and the BN statistics the fused weights were trained with are kept.
    state = prepared.state_dict()
    changed = [k for k, v in learned.items() if not torch.equal(state[k], v)]
    assert not changed, changed[:5]
    int8 = accuracy(ptq.convert_fx_model(prepared.eval()), test)
    assert after >= before - 0.01, (before, after)
    assert int8 >= before - 0.02, (before, int8)

"""PTQ (fx and PT2E) and QAT give int8 models that run; the int8 file reloads identically."""
import pytest
import torch
from torch import nn

from normapps.models import build_classifier
from normapps.norm import fold_bn
from normapps.tasks.quantization import ptq
from normapps.tasks.quantization.artifact import load_quantized, save_quantized
from normapps.tasks.quantization.qat import QATSchedule


pytestmark = pytest.mark.usefixtures("one_thread")


ARCH = {"arch": "cifar_resnet", "num_classes": 10, "in_channels": 3, "width": 8, "depth": 8}


def trained_like(**arch):
    torch.manual_seed(0)
    kw = dict(arch)
    model = build_classifier(kw.pop("arch"), **kw)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 16, 16))
    return model.eval()


def _quantized_kinds(model: nn.Module) -> set[str]:
    return {type(m).__module__ for m in model.modules() if "quantized" in type(m).__module__}


def test_fx_ptq_int8_runs_close_to_float_and_roundtrips(tmp_path):
    model = trained_like(**ARCH)
    batches = [torch.rand(16, 3, 16, 16) for _ in range(3)]
    int8 = ptq.quantize_fx(model, batches, example=batches[0][:2])
    assert _quantized_kinds(int8), "no quantized modules after convert"
    assert any(p.dtype == torch.qint8 for p in int8.state_dict().values() if isinstance(p, torch.Tensor))
    x = torch.rand(4, 3, 16, 16)
    ref, out = model(x), int8(x)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.1 * ref.abs().max() + 1e-3
    path = save_quantized(tmp_path / "q.pt", state_dict=int8.state_dict(), arch=ARCH,
                          recipe={"backend": "fx", "per_channel": True}, image_size=16)
    torch.load(path, weights_only=True)  # plain tensors only
    loaded, meta = load_quantized(path)
    torch.testing.assert_close(loaded(x), out)
    assert meta["recipe"]["backend"] == "fx"


def test_per_tensor_and_folded_recipes_roundtrip(tmp_path):
    model = fold_bn(trained_like(**ARCH))
    batches = [torch.rand(8, 3, 16, 16)]
    int8 = ptq.quantize_fx(model, batches, example=batches[0][:2], per_channel=False)
    path = save_quantized(tmp_path / "q.pt", state_dict=int8.state_dict(), arch=ARCH,
                          recipe={"backend": "fx", "per_channel": False, "folded": True}, image_size=16)
    loaded, _ = load_quantized(path)
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(loaded(x), int8(x))


def test_pt2e_ptq_on_resnet_with_shared_relu(tmp_path):
    model = trained_like(**ARCH)  # BasicBlock calls one nn.ReLU twice
    batches = [torch.rand(8, 3, 16, 16)]
    prepared, converted = ptq.quantize_pt2e(model, batches, example=batches[0][:2])
    x = torch.rand(5, 3, 16, 16)  # another batch size than calibration: dynamic batch
    ref, out = model(x), converted(x)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max() + 1e-3
    assert any("quantize_per_tensor" in str(n.target) for n in converted.graph.nodes)
    path = save_quantized(tmp_path / "q.pt", state_dict=prepared.state_dict(), arch=ARCH,
                          recipe={"backend": "pt2e", "per_channel": True}, image_size=16)
    loaded, _ = load_quantized(path)
    torch.testing.assert_close(loaded(x), out)


def test_qat_trains_with_folded_bn_freezes_and_converts():
    from torch.ao.nn.intrinsic.qat import ConvBnReLU2d

    model = trained_like(**ARCH)
    example = torch.rand(2, 3, 16, 16)
    prepared = ptq.prepare_fx_model(model, example, qat=True)
    fused = [m for m in prepared.modules() if isinstance(m, ConvBnReLU2d)]
    assert fused, "QAT should fuse conv-bn-relu into torch.ao's BN-folding QAT module"
    opt = torch.optim.SGD(prepared.parameters(), lr=0.01)

    class _Trainer:
        current_epoch = 0

    sched = QATSchedule(freeze_bn_epoch=1, freeze_observer_epoch=2)
    trainer = _Trainer()
    for epoch in range(3):
        trainer.current_epoch = epoch
        sched.on_train_epoch_start(trainer, prepared)
        prepared.train()
        rm = fused[0].bn.running_mean.clone()
        x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,))
        loss = nn.functional.cross_entropy(prepared(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        stats_moved = not torch.equal(rm, fused[0].bn.running_mean)
        assert stats_moved == (epoch < 1), f"epoch {epoch}: BN stats moved={stats_moved}"
    assert fused[0].freeze_bn
    assert all(int(m.observer_enabled[0]) == 0 for m in prepared.modules() if hasattr(m, "observer_enabled"))
    int8 = ptq.convert_fx_model(prepared.eval())
    assert _quantized_kinds(int8)
    assert int8(torch.rand(2, 3, 16, 16)).shape == (2, 10)

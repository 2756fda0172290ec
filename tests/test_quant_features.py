"""Quantization features: PT2E QAT beside fx, the per-layer int8 sensitivity report, ONNX export
checked by onnxruntime, pruned networks in the int8 file."""
import pytest
import torch
from torch import nn

from normapps.models import build_classifier
from normapps.norm import fold_bn
from normapps.tasks.quantization import ptq
from normapps.tasks.quantization.artifact import load_quantized, save_quantized
from normapps.tasks.quantization.qat import QATSchedule, finish_qat

pytestmark = pytest.mark.usefixtures("one_thread")


def _trained_like(arch="small_cnn", **kw):
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=10, **kw).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 16, 16))
    return model.eval()


@pytest.mark.slow  # torchao's prepare (40 s) and convert (3 min) of the QAT graph, twice, on a loaded CPU
def test_pt2e_qat_trains_freezes_converts_and_roundtrips(tmp_path):
    model = _trained_like(width=8)
    example = torch.rand(2, 3, 16, 16)
    net = ptq.prepare_qat_pt2e_model(model, example)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    class _Trainer:
        current_epoch = 0

    sched, trainer = QATSchedule(freeze_bn_epoch=1, freeze_observer_epoch=1), _Trainer()
    bn_mean = next(v for k, v in net.state_dict().items() if k.endswith("running_mean"))
    for epoch in range(2):
        trainer.current_epoch = epoch
        sched.on_train_epoch_start(trainer, net)
        net.train()  # what Lightning calls; exported graphs refuse a plain .train()
        before = bn_mean.clone()
        loss = nn.functional.cross_entropy(net(torch.rand(8, 3, 16, 16)), torch.randint(0, 10, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.equal(before, bn_mean) == (epoch >= 1), f"epoch {epoch}"
    finish_qat(net)
    net.eval()
    x = torch.rand(5, 3, 16, 16)
    int8 = ptq.convert_qat_pt2e_model(net)
    ref = net(x)
    out = int8(x)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max() + 1e-3
    arch = {"arch": "small_cnn", "num_classes": 10, "in_channels": 3, "width": 8}
    path = save_quantized(tmp_path / "q.pt", state_dict=net.state_dict(), arch=arch,
                          recipe={"backend": "pt2e", "per_channel": True, "qat": True}, image_size=16)
    loaded, meta = load_quantized(path)
    torch.testing.assert_close(loaded(x), out)
    assert meta["recipe"]["qat"] is True


def test_sensitivity_report_finds_the_layer_that_breaks_alone():
    from normapps.tasks.quantization.sensitivity import layer_sensitivity

    from normapps.data.classification import load_arrays

    x, y = load_arrays("digits", train=True, image_size=16, channels=3)
    torch.manual_seed(0)
    net = build_classifier("small_cnn", num_classes=10, width=8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(2):
        for i in range(0, 1400, 64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    model = fold_bn(net.eval())
    with torch.no_grad():  # one outlier output channel in features.3: per-tensor int8 of that
        s = torch.ones(16)  # layer alone crushes its other channels (compensated next layer)
        s[0] = 300.0
        model.features[3][0].weight.mul_(s.view(-1, 1, 1, 1))
        model.features[3][0].bias.mul_(s)
        model.features[4][0].weight.div_(s.view(1, -1, 1, 1))
    test = [(x[1400:], y[1400:])]
    rows = layer_sensitivity(model, test, calib=[x[:256]], example=x[:2], per_channel=False)
    names = [r["layer"] for r in rows]
    assert set(names) == {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    # The outlier channel breaks the layer that produces it (its per-tensor weights and int8
    # output) and the layer that reads it (its int8 input); every other layer alone is fine.
    assert set(names[:2]) == {"features.3.0", "features.4.0"}, rows
    assert min(r["acc_drop"] for r in rows[:2]) > 0.2 > max(r["acc_drop"] for r in rows[2:])


def test_onnx_export_of_float_and_int8_checked_by_onnxruntime(tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs the optional extra normapps[onnx]")
    pytest.importorskip("onnxruntime", reason="the ONNX check needs the optional extra normapps[onnx]")
    from normapps.tasks.quantization.onnx_export import export_and_check

    model = fold_bn(_trained_like(width=8))
    x = torch.rand(32, 3, 16, 16)
    int8 = ptq.quantize_fx(model, [x], example=x[:2])
    for name, net in (("float", model), ("int8", int8)):
        result = export_and_check(net, x, tmp_path / f"{name}.onnx")
        assert result["exported"] and (tmp_path / f"{name}.onnx").is_file(), result
        assert result["argmax_agreement"] >= 0.95 and result["max_abs_diff"] < 0.5, result


def test_pruned_network_roundtrips_through_the_int8_file(tmp_path):
    from normapps.models.resize import layer_shapes, resize_to_shapes

    model = _trained_like("vgg11", width_mult=0.125)
    narrow = _trained_like("vgg11", width_mult=0.125)
    # A "pruned" network: some layers narrower than the architecture's defaults.
    from normapps.tasks.slimming.prune import apply_plan, make_plan

    plan = make_plan(narrow, torch.rand(1, 3, 16, 16), ratio=0.4)
    apply_plan(narrow, torch.rand(1, 3, 16, 16), plan.keep)
    shapes = layer_shapes(narrow)
    rebuilt = resize_to_shapes(model, shapes)
    rebuilt.load_state_dict(narrow.state_dict())
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(rebuilt(x), narrow(x))
    int8 = ptq.quantize_fx(narrow, [x], example=x[:2])
    arch = {"arch": "vgg11", "num_classes": 10, "in_channels": 3, "width_mult": 0.125}
    path = save_quantized(tmp_path / "q.pt", state_dict=int8.state_dict(), arch=arch, layer_shapes=shapes,
                          recipe={"backend": "fx", "per_channel": True}, image_size=16)
    loaded, meta = load_quantized(path)
    torch.testing.assert_close(loaded(x), int8(x))


def test_an_int8_file_cannot_make_the_loader_build_wider_layers(tmp_path):
    """layer_shapes come from the file: pruning only shrinks layers, so a recorded size above the
    architecture's (a memory bomb) or of another rank is refused naming the file."""
    from normapps.platform.checkpoint import CheckpointError

    arch = {"arch": "small_cnn", "num_classes": 10, "in_channels": 3}
    net = build_classifier("small_cnn", num_classes=10, in_channels=3)
    name = next(n for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    for bad in ([10**6, 3, 3, 3], [4, 3], [0, 3, 3, 3]):
        path = save_quantized(tmp_path / "q.pt", state_dict={}, arch=arch, layer_shapes={name: bad},
                              recipe={"backend": "fx", "per_channel": True}, image_size=16)
        with pytest.raises(CheckpointError, match=f"q.pt.*{name}"):
            load_quantized(path)


def test_report_figure_has_a_bar_per_model_for_accuracy_and_each_batch_size():
    from normapps.tasks.quantization.plot import report_figure

    rows = [{"model": "fp32", "accuracy": 0.98, "latency_ms_bs1": 2.0, "latency_ms_bs64": 40.0},
            {"model": "int8 (ptq, fx)", "accuracy": 0.97, "latency_ms_bs1": 1.0, "latency_ms_bs64": 10.0}]
    fig = report_figure(rows)
    acc, bs1, bs64 = fig.axes
    assert [t.get_text() for t in acc.get_yticklabels()] == ["fp32", "int8 (ptq, fx)"]
    assert sorted(p.get_width() for p in acc.patches) == [97.0, 98.0]
    assert sorted(p.get_width() for p in bs64.patches) == [10.0, 40.0]
    assert "batch 1" in bs1.get_xlabel() and "batch 64" in bs64.get_xlabel()
    colors = {p.get_facecolor() for p in acc.patches}
    assert len(colors) == 2  # float and int8 told apart

import pytest
import torch
from torch import nn

from normapps.norm import build_norm, describe_norms, norm_kinds


def _train_eval_compare(ours, ref, shape, steps=3):
    """Same inputs through ours and ref: outputs, grads of input and affine, running stats."""
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():  # non-trivial affine so affine grads are meaningful
        for m in (ours, ref):
            if getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.linspace(0.5, 1.5, m.weight.numel()))
                m.bias.copy_(torch.linspace(-1, 1, m.bias.numel()))
    for step in range(steps):
        x = torch.randn(*shape) * 3 + step
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-5)
        for (n, pa), (_, pb) in zip(ours.named_parameters(), ref.named_parameters()):
            torch.testing.assert_close(pa.grad, pb.grad, atol=1e-5, rtol=1e-5, msg=n)
    for (n, ba), (_, bb) in zip(ours.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(ba, bb, atol=1e-5, rtol=1e-5, msg=n)
    ours.eval(), ref.eval()
    x = torch.randn(*shape)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kind,kw,ref,shape",
    [
        ("batch", {}, lambda: nn.BatchNorm2d(8), (4, 8, 5, 5)),
        ("batch", {"dim": 1, "momentum": 0.3}, lambda: nn.BatchNorm1d(8, momentum=0.3), (6, 8)),
        ("instance", {}, lambda: nn.InstanceNorm2d(8, affine=True), (4, 8, 5, 5)),
        ("group", {"num_groups": 4}, lambda: nn.GroupNorm(4, 8), (4, 8, 5, 5)),
        ("layer", {}, lambda: nn.GroupNorm(1, 8), (4, 8, 5, 5)),
    ],
)
def test_plain_kinds_are_torch_modules_and_match(kind, kw, ref, shape):
    torch.manual_seed(0)
    ours, ref_m = build_norm(kind, 8, **kw), ref()
    assert type(ours) is type(ref_m)  # exact class, not a subclass
    _train_eval_compare(ours, ref_m, shape)


def test_batch_running_stats_differ_from_init_after_training():
    # guards the equivalence test against comparing two untouched buffers
    bn = build_norm("batch", 4)
    bn(torch.randn(8, 4, 3, 3) + 5)
    assert bn.running_mean.abs().min() > 0.1


def test_group_extremes_equal_instance_and_layer():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 4, 4)
    gn_c = build_norm("group", 6, num_groups=6, affine=False)
    torch.testing.assert_close(gn_c(x), nn.InstanceNorm2d(6)(x), atol=1e-5, rtol=1e-5)
    gn_1 = build_norm("group", 6, num_groups=1, affine=False)
    torch.testing.assert_close(gn_1(x), nn.functional.layer_norm(x, x.shape[1:]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(build_norm("layer", 6)(x), gn_1(x), atol=1e-5, rtol=1e-5)


def test_instance_defaults_documented():
    m = build_norm("instance", 4)
    assert m.affine and not m.track_running_stats


def test_group_default_groups_adjusts():
    assert build_norm("group", 64).num_groups == 32
    assert build_norm("group", 48).num_groups == 24
    assert build_norm("group", 8).num_groups == 8


def test_errors():
    with pytest.raises(ValueError, match="batch_whiten"):  # lists the kinds
        build_norm("bogus", 8)
    with pytest.raises(ValueError, match="divide"):
        build_norm("group", 10, num_groups=4)
    with pytest.raises(ValueError):
        build_norm("batch", 8, dim=5)
    with pytest.raises(ValueError, match="divide"):
        build_norm("batch_whiten", 12, group_size=8)


def test_callable_and_none_and_describe():
    m = build_norm(nn.BatchNorm2d, 4, eps=1e-3, dim=2)
    assert type(m) is nn.BatchNorm2d and m.eps == 1e-3
    assert isinstance(build_norm("none", 4), nn.Identity)
    rows = describe_norms()
    assert [r["kind"] for r in rows] == norm_kinds()
    assert {"partition", "operation", "recovery", "module"} <= set(rows[0])
    assert next(r for r in rows if r["kind"] == "batch")["module"] == "BatchNorm2d"


@pytest.mark.parametrize("kind,kw", [
    ("batch_whiten", {"group_size": 4}), ("iter_norm", {"group_size": 4}),
    ("cond_batch", {"num_classes": 3}), ("cond_instance", {"num_styles": 3}),
    ("self_mod", {"z_dim": 5}), ("domain_batch", {"num_domains": 2}),
])
def test_every_kind_builds_and_runs(kind, kw):
    m = build_norm(kind, 8, **kw)
    x = torch.randn(4, 8, 3, 3)
    extra = {"cond_batch": (torch.tensor([0, 1, 2, 0]),), "cond_instance": (torch.tensor([0, 1, 2, 0]),),
             "self_mod": (torch.randn(4, 5),)}.get(kind, ())
    y = m(x, *extra)
    assert y.shape == x.shape and torch.isfinite(y).all()

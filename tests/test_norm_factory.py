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


# --- the vocabulary: get_norm_layer, weight kinds, norm_kind_of, NORM_LAYER_TYPES -------------
from torch.nn.utils import parametrizations  # noqa: E402

from normapps.norm import (  # noqa: E402
    ACTIVATION_NORM_KINDS, NORM_KINDS, NORM_LAYER_TYPES, WEIGHT_NORM_KINDS, activation_norm_kind,
    check_norm_kind, get_norm_layer, is_weight_norm, norm_kind_of,
)

_KIND_KW = {"batch_whiten": {"group_size": 4}, "iter_norm": {"group_size": 4},
            "cond_batch": {"num_classes": 3}, "cond_instance": {"num_styles": 3},
            "self_mod": {"z_dim": 5}, "domain_batch": {"num_domains": 2}}


def test_vocabulary_lists_both_families():
    assert WEIGHT_NORM_KINDS == ("spectral", "weight")
    assert set(ACTIVATION_NORM_KINDS) | set(WEIGHT_NORM_KINDS) == set(NORM_KINDS)
    assert list(NORM_KINDS) == norm_kinds() and norm_kinds("weights") == list(WEIGHT_NORM_KINDS)
    assert is_weight_norm("spectral") and not is_weight_norm("batch")
    assert activation_norm_kind("spectral") == "none" and activation_norm_kind("layer") == "layer"
    rows = {r["kind"]: r for r in describe_norms()}
    assert rows["spectral"]["module"] == "_SpectralNorm" and rows["weight"]["applies_to"] == "weights"
    with pytest.raises(ValueError, match="applies_to"):
        norm_kinds("bias")


@pytest.mark.parametrize("kind,kw,ref,shape", [
    ("batch", {}, lambda: nn.BatchNorm2d(8), (4, 8, 5, 5)),
    ("group", {"num_groups": 4}, lambda: nn.GroupNorm(4, 8), (4, 8, 5, 5)),
    ("instance", {"affine": False}, lambda: nn.InstanceNorm2d(8), (4, 8, 5, 5)),
    ("batch", {"dim": 1}, lambda: nn.BatchNorm1d(8), (6, 8)),
])
def test_get_norm_layer_constructs_torch_layers(kind, kw, ref, shape):
    torch.manual_seed(0)
    ctor = get_norm_layer(kind, **kw)
    ours, ref_m = ctor(8), ref()
    assert type(ours) is type(ref_m)
    _train_eval_compare(ours, ref_m, shape)


def test_get_norm_layer_passes_classes_and_binds_defaults():
    assert get_norm_layer(nn.BatchNorm2d) is nn.BatchNorm2d
    bn = get_norm_layer(nn.BatchNorm2d, eps=1e-3)(4)
    assert type(bn) is nn.BatchNorm2d and bn.eps == 1e-3
    assert get_norm_layer("group", num_groups=2)(8).num_groups == 2
    with pytest.raises(ValueError, match="known kinds"):
        get_norm_layer("bogus")
    with pytest.raises(TypeError):
        get_norm_layer(3)


def _conv_pair(seed=0):
    torch.manual_seed(seed)
    a = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    b = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    b.load_state_dict(a.state_dict())
    return a, b


def test_spectral_kind_is_torchs_spectral_norm():
    ours, ref = _conv_pair()
    torch.manual_seed(1)
    assert get_norm_layer("spectral")(ours) is ours
    torch.manual_seed(1)  # the same random u vectors, registered in the same order
    for m in (ref[0], ref[3]):
        parametrizations.spectral_norm(m)
    opt_a = torch.optim.SGD(ours.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(ref.parameters(), lr=0.1)
    for step in range(3):  # train mode: each forward runs a power iteration on both
        x = torch.randn(4, 3, 6, 6)
        ya, yb = ours(x), ref(x)
        torch.testing.assert_close(ya, yb)
        ya.square().mean().backward(), yb.square().mean().backward()
        opt_a.step(), opt_b.step()
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours[3].weight, ref[3].weight)
    with torch.no_grad():
        sigma = float(torch.linalg.matrix_norm(ours[3].weight, ord=2))
    assert abs(sigma - 1) < 0.05
    with pytest.raises(ValueError, match="get_norm_layer"):
        build_norm("spectral", 8)


def test_weight_kind_is_torchs_weight_norm():
    ours, ref = _conv_pair()
    get_norm_layer("weight")(ours)
    for m in (ref[0], ref[3]):
        parametrizations.weight_norm(m)
    x = torch.randn(4, 3, 6, 6)
    ya, yb = ours(x), ref(x)
    torch.testing.assert_close(ya, yb)
    ya.sum().backward(), yb.sum().backward()
    for (n, pa), (_, pb) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)
    assert {n for n, _ in ours.named_parameters()} == {n for n, _ in ref.named_parameters()}


@pytest.mark.parametrize("kind", [k for k in ACTIVATION_NORM_KINDS if k != "none"])
def test_norm_kind_of_inverts_build_norm(kind):
    m = build_norm(kind, 8, **_KIND_KW.get(kind, {}))
    assert norm_kind_of(m) == kind
    assert isinstance(m, NORM_LAYER_TYPES)


def test_norm_kind_of_torch_relatives():
    assert norm_kind_of(nn.SyncBatchNorm(4)) == "batch"
    assert norm_kind_of(nn.LayerNorm(4)) == "layer"
    assert norm_kind_of(nn.GroupNorm(2, 4)) == "group"
    assert norm_kind_of(build_norm("none", 4)) is None and norm_kind_of(nn.Conv2d(1, 1, 1)) is None
    assert not isinstance(nn.Identity(), NORM_LAYER_TYPES)


def test_check_norm_kind_names_the_option():
    assert check_norm_kind("Spectral", "model.d_norm", ("spectral", "batch")) == "spectral"
    with pytest.raises(ValueError, match=r"model\.d_norm must be one of spectral, batch, got 'group'"):
        check_norm_kind("group", "model.d_norm", ("spectral", "batch"))
    with pytest.raises(ValueError, match="not normalization kinds"):
        check_norm_kind("batch", "x", ("batch", "fancy"))

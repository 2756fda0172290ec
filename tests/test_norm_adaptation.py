"""The core's test-time adaptation tools: prior BN, norm selection, entropy filters, Fisher, SAM."""
import copy
import math

import pytest
import torch
from torch import nn

from normapps.norm import (
    SAM, StateSnapshot, build_norm, configure_norm_adaptation, entropy_margin, entropy_weights,
    fisher_diagonal, fisher_penalty, norm_affine_params, norm_layer_kind, redundancy_mask,
    reliable_mask, softmax_entropy, update_mean_probs, use_batch_stats, use_prior_stats,
)


def _bn_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(16, 3, 8, 8) * 2 + 1)
    return net.eval()


def test_prior_bn_zero_is_test_bn_and_infinite_is_source():
    net = _bn_net()
    x = torch.randn(6, 3, 8, 8) * 3 - 2
    test_bn = use_batch_stats(copy.deepcopy(net))(x)
    prior0 = use_prior_stats(copy.deepcopy(net), 0)(x)
    assert torch.allclose(prior0, test_bn, atol=1e-5)
    source = net(x)
    big = use_prior_stats(copy.deepcopy(net), 1e12)(x)
    assert torch.allclose(big, source, atol=1e-5)
    assert torch.allclose(use_prior_stats(copy.deepcopy(net), math.inf)(x), source, atol=1e-6)


def test_prior_bn_mixes_as_pseudo_samples():
    net = _bn_net()
    bn = net[1]
    x = torch.randn(4, 3, 8, 8) * 2 + 3
    feats = net[0](x).detach()
    n_prior = 12.0
    w = n_prior / (n_prior + 4)  # 12 pseudo-samples against a batch of 4
    var_b, mean_b = torch.var_mean(feats, dim=(0, 2, 3), correction=0)
    mean = w * bn.running_mean + (1 - w) * mean_b
    var = w * bn.running_var + (1 - w) * var_b + w * (1 - w) * (mean_b - bn.running_mean) ** 2
    expected = (feats - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + bn.eps)
    expected = expected * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    adapted = use_prior_stats(copy.deepcopy(net), n_prior)
    assert torch.allclose(adapted[1](feats), expected, atol=1e-5)
    # running statistics never move, also in train mode
    before = copy.deepcopy(adapted.state_dict())
    adapted.train()
    adapted(x)
    assert all(torch.equal(before[k], v) for k, v in adapted.state_dict().items())
    with pytest.raises(ValueError, match="prior_n"):
        use_prior_stats(copy.deepcopy(net), -1)


def test_norm_kinds_and_selection():
    assert norm_layer_kind(build_norm("batch", 8)) == "batch"
    assert norm_layer_kind(build_norm("group", 8, num_groups=4)) == "group"
    assert norm_layer_kind(build_norm("layer", 8)) == "layer"  # GroupNorm(1, C)
    assert norm_layer_kind(nn.LayerNorm(8)) == "layer"
    net = nn.Sequential(nn.Conv2d(3, 8, 1), build_norm("batch", 8), nn.Conv2d(8, 8, 1),
                        build_norm("group", 8, num_groups=4), nn.Conv2d(8, 8, 1), build_norm("layer", 8))
    assert [n for n, _ in norm_affine_params(net, ["batch"])] == ["1.weight", "1.bias"]
    assert [n for n, _ in norm_affine_params(net, ["group", "layer"])] == ["3.weight", "3.bias", "5.weight", "5.bias"]
    assert [n for n, _ in norm_affine_params(net, ["batch", "group", "layer"], exclude=["3", "5"])] == ["1.weight", "1.bias"]
    params = configure_norm_adaptation(net, ["group"])
    assert {id(p) for p in params} == {id(net[3].weight), id(net[3].bias)}
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["3.weight", "3.bias"]
    with pytest.raises(ValueError, match="norm kinds"):
        norm_affine_params(net, ["weird"])


def test_entropy_filters_select_what_their_definitions_select():
    # entropies constructed from logits: uniform over 10 (ln 10), confident, in between
    c = 10
    logits = torch.stack([torch.zeros(c), torch.tensor([12.0] + [0.0] * 9), torch.tensor([2.0] + [0.0] * 9)])
    ent = softmax_entropy(logits)
    assert torch.allclose(ent[0], torch.tensor(math.log(c)), atol=1e-5)
    margin = entropy_margin(c)
    assert margin == pytest.approx(0.4 * math.log(10))
    assert reliable_mask(ent, margin).tolist() == [False, True, bool(ent[2] < margin)]
    assert reliable_mask(torch.tensor([0.1, 0.92, 0.921, 2.0]), 0.921).tolist() == [True, True, False, False]
    # redundancy: the same direction as the running mean is redundant, an orthogonal one is not
    mean = torch.tensor([1.0, 0.0, 0.0])
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.5, 0.5], [0.05, 0.95, 0.0]])
    cos = torch.nn.functional.cosine_similarity(mean[None], probs, dim=1)
    assert redundancy_mask(probs, mean, 0.1).tolist() == (cos.abs() < 0.1).tolist() == [False, True, True]
    assert redundancy_mask(probs, None, 0.1).all()
    new = update_mean_probs(mean, probs[:2])
    assert torch.allclose(new, 0.9 * mean + 0.1 * probs[:2].mean(0))
    assert update_mean_probs(mean, probs[:0]) is mean
    w = entropy_weights(torch.tensor([margin, 0.0]), margin)
    assert torch.allclose(w, torch.tensor([1.0, math.exp(margin)]))


def test_fisher_and_penalty():
    torch.manual_seed(0)
    lin = nn.Linear(3, 4)
    x = torch.randn(8, 3)
    fisher = fisher_diagonal(lin, [lin.weight, lin.bias], [x[:4], x[4:]])
    ref = [torch.zeros_like(lin.weight), torch.zeros_like(lin.bias)]
    for chunk in (x[:4], x[4:]):
        out = lin(chunk)
        loss = nn.functional.cross_entropy(out, out.argmax(1))
        gw, gb = torch.autograd.grad(loss, [lin.weight, lin.bias])
        ref[0] += gw ** 2 / 2
        ref[1] += gb ** 2 / 2
    assert torch.allclose(fisher[0], ref[0]) and torch.allclose(fisher[1], ref[1])
    anchors = [lin.weight.detach() + 1, lin.bias.detach()]
    pen = fisher_penalty([lin.weight, lin.bias], fisher, anchors, alpha=3.0)
    assert torch.allclose(pen, 3.0 * fisher[0].sum())


def test_sam_steps_with_the_gradient_at_the_perturbed_point():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = SAM([w], torch.optim.SGD, rho=0.5, lr=0.1)
    loss_fn = lambda: (w ** 4).sum()  # noqa: E731
    loss_fn().backward()
    g = w.grad.clone()
    opt.first_step(zero_grad=True)
    w_adv = w.detach().clone()
    assert torch.allclose(w_adv, torch.tensor([1.0, -2.0]) + 0.5 * g / g.norm())
    loss_fn().backward()
    g_adv = w.grad.clone()
    opt.second_step(zero_grad=True)
    assert torch.allclose(w.detach(), torch.tensor([1.0, -2.0]) - 0.1 * g_adv)


def test_snapshot_restores_model_and_optimizer_exactly():
    net = _bn_net()
    params = configure_norm_adaptation(net, ["batch"])
    opt = SAM(params, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    snap = StateSnapshot(net, opt)
    before = copy.deepcopy(net.state_dict())
    for _ in range(2):
        softmax_entropy(net(torch.randn(4, 3, 8, 8))).mean().backward()
        opt.first_step(zero_grad=True)
        softmax_entropy(net(torch.randn(4, 3, 8, 8))).mean().backward()
        opt.second_step(zero_grad=True)
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert opt.base_optimizer.state  # momentum buffers exist
    snap.restore()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not opt.base_optimizer.state and opt.param_groups is opt.base_optimizer.param_groups

import copy

import torch
from torch import nn

from normapps.norm import use_batch_stats, use_running_stats


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6), nn.BatchNorm1d(6))
    net.train()
    for _ in range(3):
        net(torch.randn(16, 3, 8, 8) * 2 + 1)
    return net.eval()


def test_batch_stats_in_eval_mode_without_touching_running_stats():
    net = _net()
    before = copy.deepcopy(net.state_dict())
    use_batch_stats(net)
    net.eval()
    x = torch.randn(10, 3, 8, 8) * 5 - 3
    out = net[1](net[0](x))
    # Normalized with the batch's own statistics: per-channel mean 0, biased var 1 (affine = id).
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(out.var(dim=(0, 2, 3), unbiased=False), torch.ones(4), atol=1e-3)
    net(x)
    for k, v in net.state_dict().items():
        if "num_batches_tracked" not in k:
            assert torch.equal(v, before[k]), k


def test_single_value_per_channel_falls_back_to_running_stats():
    net = _net()
    ref = copy.deepcopy(net).eval()
    use_batch_stats(net)
    x = torch.randn(1, 3, 8, 8)
    out = net(x)  # BatchNorm1d sees one value per channel: must not raise
    # The conv BN used the sample's statistics (64 values per channel), so outputs differ from
    # pure running-stats inference, but the 1-D BN used its running statistics.
    assert out.shape == (1, 6)
    assert not torch.allclose(out, ref(x))
    feats = net[:6](x)
    assert torch.allclose(out, ref[6](feats), atol=1e-6)


def test_undo_restores_running_stats_behaviour():
    net = _net()
    ref = copy.deepcopy(net)
    use_batch_stats(net)
    use_running_stats(net)
    net.eval()
    x = torch.randn(5, 3, 8, 8)
    assert torch.allclose(net(x), ref(x))
    assert net[1].momentum == ref[1].momentum

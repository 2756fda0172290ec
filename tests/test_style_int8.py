"""AdaIN's int8 path as precision=auto runs it: chosen on VNNI CPUs only, the encoder's
calibration cached on disk (weights_only) and in the process, the decoder calibrated per style set."""
from __future__ import annotations

import copy

import pytest
import torch

from normapps.tasks.style_transfer import int8_calibration, network_cache, stylize
from normapps.tasks.style_transfer.decoder import Decoder
from normapps.tasks.style_transfer.stylize import Stylizer, auto_int8
from normapps.tasks.style_transfer.vgg import VGGEncoder


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return VGGEncoder("vgg16").eval(), Decoder().eval()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty disk cache, an empty process cache, one calibration photo per network."""
    monkeypatch.setenv("NORMAPPS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(stylize, "ENCODER_PHOTOS", ("chelsea",))
    monkeypatch.setattr(stylize, "DECODER_PHOTOS", ("rocket",))
    network_cache.clear()
    yield tmp_path / "cache" / "int8"
    network_cache.clear()


def image(seed: int, size: int = 64) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def int8_stylizer(nets, **kw) -> Stylizer:
    enc, dec = (copy.deepcopy(n) for n in nets)
    return Stylizer(enc, dec, precision=kw.pop("precision", "int8"), channels_last=True, tile_size=0, **kw)


@pytest.mark.parametrize("vnni,device,method,compile_,expected", [
    (True, "cpu", "adain", False, True),
    (False, "cpu", "adain", False, False),   # no VNNI: bf16 or fp32 as before
    (True, "cpu", "wct", False, False),      # WCT's int8 quality is not measured
    (True, "cpu", "adain", True, False),     # compile: the frozen float graph
    (True, "cuda", "adain", False, False),   # GPUs: bf16
])
def test_auto_runs_int8_for_adain_on_vnni_cpus_only(monkeypatch, vnni, device, method, compile_, expected):
    monkeypatch.setattr(stylize, "cpu_has_vnni", lambda: vnni)
    assert auto_int8(torch.device(device), method=method, compile=compile_) is expected


def test_auto_stylizer_is_int8_on_a_vnni_cpu(nets, monkeypatch):
    monkeypatch.setattr(stylize, "cpu_has_vnni", lambda: True)
    assert int8_stylizer(nets, precision="auto").precision_name == "int8"
    monkeypatch.setattr(stylize, "cpu_has_vnni", lambda: False)
    assert int8_stylizer(nets, precision="auto").precision_name in ("bfloat16", "float32")


def test_encoder_calibration_is_cached_on_disk_and_gives_the_same_output(nets, cache):
    content, style = image(1), image(2)
    first = int8_stylizer(nets)
    code = first.encode_style(style)
    a = first.stylize(content, [code])
    assert first.int8_source == "calibrated"
    files = list(cache.glob("encoder-*.pt"))
    assert len(files) == 1
    state = torch.load(files[0], weights_only=True)
    assert any(k.endswith("histogram") for k in state)

    network_cache.clear()  # a new process: only the disk cache is left
    second = int8_stylizer(nets)
    b = second.stylize(content, [second.encode_style(style)])
    assert second.int8_source == "cached calibration"
    assert torch.equal(a, b)

    third = int8_stylizer(nets)  # same process: the quantized encoder is reused
    third.stylize(content, [third.encode_style(style)])
    assert third.int8_source == "kept from an earlier run in this process"


def test_an_unreadable_cache_file_is_warned_about_and_recalibrated(nets, cache):
    st = int8_stylizer(nets)
    st.stylize(image(1), [st.encode_style(image(2))])
    (path,) = cache.glob("encoder-*.pt")
    path.write_bytes(b"not a torch file")
    network_cache.clear()
    again = int8_stylizer(nets)
    with pytest.warns(UserWarning, match="unreadable"):
        again.stylize(image(1), [again.encode_style(image(2))])
    assert again.int8_source == "calibrated"
    assert torch.load(path, weights_only=True)  # rewritten


def test_a_cache_file_of_another_model_is_refused_by_the_observer_check(nets, cache):
    st = int8_stylizer(nets)
    st.stylize(image(1), [st.encode_style(image(2))])
    (path,) = cache.glob("encoder-*.pt")
    state = torch.load(path, weights_only=True)
    key = next(k for k in state if k.endswith("histogram"))
    state[key] = torch.zeros(7)
    torch.save(state, path)
    network_cache.clear()
    again = int8_stylizer(nets)
    with pytest.warns(UserWarning, match="does not fit this model"):
        again.stylize(image(1), [again.encode_style(image(2))])
    assert again.int8_source == "calibrated"


def test_the_decoder_is_calibrated_again_for_new_styles(nets, cache):
    st = int8_stylizer(nets)
    one, two = st.encode_style(image(2)), st.encode_style(image(3) * 0.3)
    st.stylize(image(1), [one])
    decoder_one = st._decoder_fn
    st.stylize(image(1), [one])
    assert st._decoder_fn is decoder_one
    st.stylize(image(1), [two])
    assert st._decoder_fn is not decoder_one
    st.stylize(image(1), [one])  # back to the first style: kept in the process cache
    assert st._decoder_fn is decoder_one


def test_module_digest_changes_with_the_weights(nets):
    enc = copy.deepcopy(nets[1])
    before = network_cache.module_digest(enc)
    with torch.no_grad():
        next(enc.parameters()).view(-1)[0] += 1e-3
    assert network_cache.module_digest(enc) != before


def test_calibration_refuses_empty_inputs(nets):
    st = int8_stylizer(nets)
    with pytest.raises(ValueError, match="at least one style"):
        st.calibrate_int8([])
    with pytest.raises(ValueError, match="empty"):
        st.calibrate_int8([st.encode_style(image(2))], photos=[])
    fp32 = int8_stylizer(nets, precision="fp32")
    with pytest.raises(RuntimeError, match="precision='int8'"):
        fp32.calibrate_int8([fp32.encode_style(image(2))])

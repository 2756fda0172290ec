"""The offline fallback metric (fid_local / kid_local / is_local) and its guards."""
import pytest
import torch

from normapps.tasks.gan.metrics import GANMetrics, InceptionFeatures, get_local_feature_net


@pytest.fixture(scope="module")
def digits():
    from normapps.data.classification import load_arrays

    x, y = load_arrays("digits", train=True, image_size=32, channels=3)
    return x[:400], y[:400]


def test_local_metric_separates_real_from_noise(digits, tmp_path):
    x, y = digits
    torch.manual_seed(0)
    net = get_local_feature_net(x, y, steps=12, seed=0, cache_dir=tmp_path)
    assert list(tmp_path.glob("*.pt")), "the network should be cached"
    scores = {}
    for name, fake in {"real": x[200:], "noise": torch.rand(200, 3, 32, 32),
                       "blurred": torch.nn.functional.avg_pool2d(x[200:], 5, 1, 2)}.items():
        m = GANMetrics(net, suffix="_local", with_is=True, kid_subset_size=100)
        m.update(x[:200], real=True)
        m.update(fake, real=False)
        scores[name] = m.compute()
    assert set(scores["real"]) == {"fid_local", "kid_local", "is_local"}
    assert scores["real"]["fid_local"] < scores["blurred"]["fid_local"] < scores["noise"]["fid_local"]
    assert scores["real"]["kid_local"] < scores["noise"]["kid_local"]
    # A cached network is reused (identical weights), not retrained.
    again = get_local_feature_net(x, y, steps=12, seed=0, cache_dir=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


def test_real_stats_kept_fake_reset(digits):
    x, y = digits
    net = get_local_feature_net(x, y, steps=2, seed=0, cache_dir=None)
    m = GANMetrics(net, suffix="_local", with_is=False, kid_subset_size=50)
    m.update(x[:100], real=True)
    m.update(x[100:200], real=False)
    first = m.compute()["fid_local"]
    m.reset_fake()
    m.update(x[100:200], real=False)
    assert m.compute()["fid_local"] == pytest.approx(first, rel=1e-5)


def test_inception_weights_path_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="inception_weights"):
        InceptionFeatures(tmp_path / "missing.pth")


def _random_inception_weights(path, monkeypatch):
    """A state dict with the FID InceptionV3's exact layout (random values: no download here)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with monkeypatch.context() as mp:
        mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, **k: None)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(net.state_dict(), path)
    return path


def test_inception_from_local_weights_gives_standard_fid_names(tmp_path, monkeypatch):
    weights = _random_inception_weights(tmp_path / "pt_inception.pth", monkeypatch)
    extractor = InceptionFeatures(weights)
    feats, logits = extractor(torch.rand(2, 3, 32, 32))
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    metrics = GANMetrics(extractor, suffix="", with_is=True, kid_subset_size=2, kid_subsets=2)
    torch.manual_seed(0)
    metrics.update(torch.rand(4, 3, 32, 32), real=True)
    metrics.update(torch.rand(20, 3, 32, 32), real=False)  # IS uses 10 splits
    out = metrics.compute()
    assert {"fid", "kid", "is"} <= set(out) and out["fid"] >= 0


def test_malicious_inception_weights_are_refused(tmp_path):
    import os

    from normapps.platform.checkpoint import CheckpointError

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"w": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError):
        InceptionFeatures(tmp_path / "evil.pth")
    assert not marker.exists()


def test_inception_weights_are_read_once(tmp_path, monkeypatch):
    """The vetted tensors are what the network gets: a file swapped after the weights_only check
    is never read again (torch-fidelity's own loader would unpickle it with weights_only=False)."""
    import os

    import normapps.platform.checkpoint as checkpoint

    weights = _random_inception_weights(tmp_path / "pt_inception.pth", monkeypatch)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    vet = checkpoint.safe_load

    def vet_then_swap(path, *args, **kwargs):
        out = vet(path, *args, **kwargs)
        torch.save({"w": Evil()}, path)
        return out

    monkeypatch.setattr(checkpoint, "safe_load", vet_then_swap)
    import normapps.tasks.gan.metrics as gan_metrics

    monkeypatch.setattr(gan_metrics, "safe_load", vet_then_swap)
    try:
        extractor = InceptionFeatures(weights)
    finally:
        assert not marker.exists(), "the weights file was unpickled a second time, without weights_only"
    assert extractor(torch.rand(1, 3, 32, 32))[0].shape == (1, 2048)

"""Test streams: deterministic by seed, and with the stated statistics."""
import numpy as np
import pytest
import torch

from normapps.data.streams import build_streams, check_stream, dirichlet_label_order


def _domains(n_domains=3, n=60, classes=6):
    g = torch.Generator().manual_seed(0)
    out = []
    for d in range(n_domains):
        y = torch.arange(n) % classes
        x = torch.randn(n, 1, 2, 2, generator=g) + 10 * d  # the domain is readable from x
        out.append((f"d{d}", x, y))
    return out


def test_reset_and_continual_keep_order_mixed_shuffles_deterministically():
    doms = _domains()
    reset = build_streams("reset", doms)
    assert [s.name for s in reset] == ["d0", "d1", "d2"]
    assert all(torch.equal(s.images, d[1]) and (s.domains == i).all() for i, (s, d) in enumerate(zip(reset, doms)))
    (cont,) = build_streams("continual", doms)
    assert torch.equal(cont.domains, torch.arange(3).repeat_interleave(60))  # one domain after another
    assert torch.equal(cont.images, torch.cat([d[1] for d in doms]))
    (mixed,) = build_streams("mixed", doms, seed=1)
    (again,) = build_streams("mixed", doms, seed=1)
    (other,) = build_streams("mixed", doms, seed=2)
    assert torch.equal(mixed.images, again.images) and not torch.equal(mixed.images, other.images)
    assert sorted(mixed.domains.tolist()) == sorted(cont.domains.tolist())
    # shuffled across domains: the first 60 samples come from more than one domain
    assert len(mixed.domains[:60].unique()) == 3
    # images, labels and domain tags stay together
    assert torch.equal((mixed.images.mean(dim=(1, 2, 3)) / 10).round().long(), mixed.domains)


def test_dirichlet_order_is_a_permutation_deterministic_by_seed():
    y = torch.arange(300) % 10
    order = dirichlet_label_order(y, 0.1, seed=3)
    assert sorted(order.tolist()) == list(range(300))
    assert torch.equal(order, dirichlet_label_order(y, 0.1, seed=3))
    assert not torch.equal(order, dirichlet_label_order(y, 0.1, seed=4))


def _slot_fractions(y, concentration, seed):
    order = dirichlet_label_order(y, concentration, seed=seed)
    classes = int(y.max()) + 1
    # which slot each sample ended in: slots hold the chunks in order; recover them by
    # re-running the proportions (numpy draws the Dirichlet first).
    rng = np.random.default_rng(seed)
    return rng.dirichlet([concentration] * classes, size=classes), order


@pytest.mark.parametrize("concentration", [0.1, 1.0, 10.0])
def test_dirichlet_proportions_have_the_stated_variance(concentration):
    # Each class is split over T slots with Dirichlet(a * 1_T) proportions: every fraction has
    # mean 1/T and variance (1/T)(1 - 1/T) / (T a + 1).
    classes, per = 100, 200
    y = torch.arange(classes * per) % classes
    props, order = _slot_fractions(y, concentration, seed=0)
    t = classes
    expected = (1 / t) * (1 - 1 / t) / (t * concentration + 1)
    assert props.var() == pytest.approx(expected, rel=0.2)
    # the realised stream follows those proportions: class c's samples sit in its slots
    labels = y[order].numpy()
    first_slot_len = sum(int(len(np.split(np.arange(per), (np.cumsum(p)[:-1] * per).astype(int))[0]))
                         for p in props)
    counts = np.bincount(labels[:first_slot_len], minlength=classes) / per
    assert np.allclose(counts, [len(np.split(np.arange(per), (np.cumsum(p)[:-1] * per).astype(int))[0]) / per
                                for p in props])


def test_small_concentration_gives_correlated_labels():
    y = torch.arange(1000) % 10

    def switches(labels):
        return int((labels[1:] != labels[:-1]).sum())

    iid = switches(y[torch.randperm(1000, generator=torch.Generator().manual_seed(0))])
    low = switches(y[dirichlet_label_order(y, 0.01, seed=0)])
    high = switches(y[dirichlet_label_order(y, 100.0, seed=0)])
    assert low < 30 < iid  # long single-class runs
    assert low < high  # more concentration: classes spread over every slot
    (s,) = build_streams("label_shift", [("a", torch.zeros(1000, 1, 1, 1), y)], dirichlet=0.01)
    assert switches(s.labels) == low


def test_bad_stream_options():
    with pytest.raises(ValueError, match="data.target.stream"):
        check_stream("sometimes")
    with pytest.raises(ValueError, match="dirichlet"):
        check_stream("label_shift", None)
    with pytest.raises(ValueError, match="dirichlet"):
        check_stream("label_shift", 0)


def test_windowed_errors_cover_the_stream_in_whole_batches():
    from normapps.tasks.domain_adaptation.runner import windowed_errors

    wrong = torch.zeros(1013 * 4, dtype=torch.bool)
    wrong[2000:] = True
    xs, ys, per_window = windowed_errors(wrong, batch_size=4, max_points=100, min_window=32)
    assert per_window == 11 and len(xs) <= 100  # ceil(1013 / 100) batches, >= 32 samples
    assert ys[0] == 0.0 and ys[-1] == 1.0 and xs == sorted(xs)
    # the short tail (1013 = 92 * 11 + 1 batches) joins the last window instead of a 1-batch point
    assert len(xs) == 92 and xs[-1] == pytest.approx((91 * 11 + 1013) / 2)
    # batch size 1 at a tiny stream: windows of 32 samples
    assert windowed_errors(torch.ones(70, dtype=torch.bool), batch_size=1)[2] == 32


@pytest.mark.parametrize("kind", ["continual", "mixed"])
def test_stream_figure_has_a_panel_per_norm(tmp_path, kind):
    import types

    from normapps.tasks.domain_adaptation.runner import plot_stream
    from tests.helpers import assert_figure

    names = ["fog-5", "contrast-5", "frost-5"]
    doms = [(n, torch.zeros(40, 1, 2, 2), torch.arange(40) % 10) for n in names]
    (stream,) = build_streams(kind, doms, seed=0)
    g = torch.Generator().manual_seed(0)
    curves = {(norm, m): torch.rand(120, generator=g) < p
              for norm in ("batch", "group") for m, p in (("none", 0.6), ("tent", 0.2))}
    ctx = types.SimpleNamespace(output_dir=tmp_path, loggers=[])
    path = plot_stream(ctx, curves, stream, names, kind=kind, batch_size=2, norms=["batch", "group"])
    assert path == tmp_path / "da_stream.png"
    assert_figure(path, min_height=500)

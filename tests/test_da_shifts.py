import pytest
import torch

from normapps.data.classification import load_arrays
from normapps.data.shifts import SYNTHETIC_SHIFTS, apply_shift, load_shift_dataset, resolve_shifts
from normapps.tasks.domain_adaptation.targets import build_targets, parse_target_spec


@pytest.fixture(scope="module")
def digits():
    x, y = load_arrays("digits", train=True, image_size=32, channels=3)
    return x[:16], y[:16]


@pytest.mark.parametrize("name", SYNTHETIC_SHIFTS)
def test_shift_changes_image_deterministically(digits, name):
    x = digits[0]
    out = apply_shift(x, name, seed=3)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert float((out - x).abs().mean()) > 0.02
    assert torch.equal(out, apply_shift(x, name, seed=3))


def test_shift_definitions(digits):
    x = digits[0]
    assert torch.allclose(apply_shift(x, "inverted"), 1 - x)
    col = apply_shift(x, "colour", seed=0)
    # Background (x == 0) takes one random colour per image; strokes its complement.
    bg = col[:, :, 0, 0]
    assert torch.allclose(col[:, :, :2, :2], bg[:, :, None, None].expand(-1, -1, 2, 2))
    assert bg.std(0).min() > 0.05  # colours differ between images
    # Scaling shrinks the digit: less ink overall; rotation keeps about as much ink.
    assert apply_shift(x, "scale", scale_factor=0.6).sum() < 0.6 * x.sum()
    rot = apply_shift(x, "rotate", rotate_degrees=90.0)
    assert torch.allclose(rot.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=0.1)
    with pytest.raises(ValueError, match="3-channel"):
        apply_shift(x[:, :1], "colour")


def test_dataset_shift_without_files_names_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="usps not found"):
        load_shift_dataset("usps", root=str(tmp_path))
    with pytest.raises(ValueError, match="unknown shift"):
        resolve_shifts("sideways")
    assert resolve_shifts("all") == list(SYNTHETIC_SHIFTS)


def test_target_rows(digits):
    x, y = digits
    spec = parse_target_spec({"corruption": ["contrast", "fog"], "severity": [1, 5],
                              "shift": ["inverted"], "seed": 0})
    targets = build_targets(spec, x, y)
    assert [t.name for t in targets] == ["contrast-1", "contrast-5", "fog-1", "fog-5", "inverted"]
    t = targets[0]
    assert (t.corruption, t.severity, t.shift) == ("contrast", 1, None)
    assert targets[-1].shift == "inverted" and targets[-1].severity is None
    few = build_targets(parse_target_spec({"corruption": "fog", "n_examples": 7}), x, y)
    assert len(few[0].labels) == 7 and torch.equal(few[0].labels, y[:7])
    assert all(torch.equal(t.labels, y) for t in targets)
    with pytest.raises(ValueError, match="no target"):
        parse_target_spec({"corruption": None, "shift": None})
    with pytest.raises(ValueError, match="severity"):
        parse_target_spec({"corruption": "all", "severity": 7})

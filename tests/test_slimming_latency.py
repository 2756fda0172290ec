"""Slimming latencies are those of the deployable model: BN folded into the convs, in the memory
format that measured fastest (each format timed, the faster kept and named in the table)."""
import torch
from torch import nn

from normapps.models import build_classifier
from normapps.platform import profiling
from normapps.tasks.slimming.runner import stage_rows

OPTS = {"latency_batch_sizes": [1, 4], "latency_rounds": 1, "latency_repeats": 1, "latency_threads": 1,
        "latency_channels_last": None}


def test_stage_latency_times_the_bn_folded_model_in_both_formats(monkeypatch):
    timed = []
    real = profiling.round_robin

    def spy(candidates, **kw):  # each candidate is partial(model, example)
        for call in candidates.values():
            fn, example = call.func, call.args[0]
            timed.append((fn, example.is_contiguous(memory_format=torch.channels_last) and example.shape[0] > 1))
        return real(candidates, **kw)

    monkeypatch.setattr(profiling, "round_robin", spy)
    torch.manual_seed(0)
    net = build_classifier("vgg11", num_classes=10, width_mult=0.125).eval()
    rows = stage_rows({"trained": net}, {"trained": 0.9}, (3, 16, 16), OPTS)
    assert timed and not any(isinstance(m, nn.BatchNorm2d) for fn, _ in timed for m in fn.modules())
    assert {nhwc for _, nhwc in timed} == {True, False}  # both layouts measured
    row = rows[0]
    assert row["latency_model"] == "bn-folded"
    assert row["latency_format_bs1"] in ("nchw", "channels_last")
    assert row["latency_format_bs4"] in ("nchw", "channels_last")
    # The table's other columns still describe the trained network as it is (BN counted).
    assert row["params"] == sum(p.numel() for p in net.parameters())


def test_a_forced_format_is_honoured(monkeypatch):
    torch.manual_seed(0)
    net = build_classifier("vgg11", num_classes=10, width_mult=0.125).eval()
    rows = stage_rows({"trained": net}, {"trained": 0.9}, (3, 16, 16), {**OPTS, "latency_channels_last": False})
    assert rows[0]["latency_format_bs1"] == rows[0]["latency_format_bs4"] == "nchw"


def test_stage_rows_and_figure_show_channels_kept_and_latency():
    from normapps.tasks.slimming.plot import stage_figure
    from normapps.tasks.slimming.prune import apply_plan, make_plan

    torch.manual_seed(0)
    net = build_classifier("vgg11", num_classes=10, width_mult=0.125).eval()
    pruned = build_classifier("vgg11", num_classes=10, width_mult=0.125).eval()
    x = torch.rand(1, 3, 16, 16)
    plan = make_plan(pruned, x, ratio=0.5)
    apply_plan(pruned, x, plan.keep)
    rows = stage_rows({"trained": net, "pruned": pruned}, {"trained": 0.9, "pruned": 0.8}, (3, 16, 16), OPTS)
    assert rows[0]["channels_kept"] == 1.0
    assert rows[1]["channels_kept"] == 1 - plan.pruned_fraction()
    fig = stage_figure(rows)
    left, right = fig.axes
    assert [tuple(c.get_offsets()[0]) for c in left.collections] == [(100.0, 90.0), (100 * rows[1]["channels_kept"], 80.0)]
    lines = {line.get_label(): line for line in right.get_lines()}
    assert set(lines) == {"batch 1", "batch 4"}
    assert list(lines["batch 4"].get_xdata()) == [r["latency_ms_bs4"] for r in rows]

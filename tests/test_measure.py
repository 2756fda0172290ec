"""normapps.platform.measure: the round-robin timer (order, medians, per-round ratios, threads,
CUDA synchronization) and the run-duration timer, on a fake clock so nothing depends on load."""
import pytest
import torch

from normapps.platform import measure
from normapps.platform.measure import duration, num_threads, round_robin


class FakeClock:
    """A clock that only moves when a candidate says so: each call costs a known time."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _candidates(clock, log, costs):
    """Candidates that log their name and advance the clock by their cost in this round."""
    calls = {name: 0 for name in costs}

    def make(name):
        def run():
            cost = costs[name][min(calls[name], len(costs[name]) - 1)]
            calls[name] += 1
            log.append(name)
            clock.now += cost
        return run

    return {name: make(name) for name in costs}


def test_round_robin_interleaves_after_warm_up_and_reports_medians_and_round_ratios():
    clock, log = FakeClock(), []
    # call 0 is the warm-up (expensive: it must not count); rounds 1..3 follow.
    # In round 2 the machine is "loaded": both candidates take 10x longer.
    costs = {"ref": [9.0, 1.0, 10.0, 1.0], "fast": [9.0, 0.5, 5.0, 0.5]}
    result = round_robin(_candidates(clock, log, costs), rounds=3, warmup=1, reference="ref", clock=clock)
    assert log == ["ref", "fast"] + ["ref", "fast"] * 3  # warm-up each, then one call each per round
    assert list(result) == ["ref", "fast"]
    assert result["ref"].samples == (1.0, 10.0, 1.0) and result["fast"].samples == (0.5, 5.0, 0.5)
    assert result["ref"].median_s == 1.0 and result["fast"].median_ms == 500.0
    assert result["fast"].ratios == (2.0, 2.0, 2.0) and result["fast"].speedup == 2.0
    assert result["ref"].speedup == 1.0


def test_speedup_is_the_median_of_round_ratios_not_the_ratio_of_medians():
    clock = FakeClock()
    costs = {"a": [1.0, 1.0, 3.0, 3.0], "b": [1.0, 2.0, 1.0, 4.0]}  # warm-up, then 3 rounds
    result = round_robin(_candidates(clock, [], costs), rounds=3, reference="a", clock=clock)
    assert result["b"].ratios == (0.5, 3.0, 0.75)
    assert result["b"].speedup == 0.75  # while the ratio of medians would say 3 / 2 = 1.5
    assert result["a"].median_s / result["b"].median_s == 1.5


def test_repeats_are_timed_as_one_block_and_divided():
    clock, log = FakeClock(), []
    result = round_robin(_candidates(clock, log, {"x": [0.25]}), rounds=2, repeats=4, warmup=0, clock=clock)
    assert log == ["x"] * 8 and result["x"].samples == (0.25, 0.25) and result["x"].speedup is None


def test_threads_are_set_for_the_measurement_and_restored_even_on_error():
    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    seen = []
    round_robin({"x": lambda: seen.append(torch.get_num_threads())}, rounds=2, warmup=1, threads=target)
    assert seen == [target] * 3 and torch.get_num_threads() == before

    def boom():
        raise RuntimeError("kernel failed")

    with pytest.raises(RuntimeError, match="kernel failed"):
        round_robin({"x": boom}, threads=target)
    assert torch.get_num_threads() == before
    with num_threads(None) as n:
        assert n == before


@pytest.mark.parametrize("kw, msg", [({"rounds": 0}, "rounds"), ({"repeats": 0}, "repeats"),
                                     ({"warmup": -1}, "warmup"), ({"reference": "y"}, "reference 'y'"),
                                     ({"threads": 0}, "threads")])
def test_bad_settings_are_refused_naming_them(kw, msg):
    with pytest.raises(ValueError, match=msg):
        round_robin({"x": lambda: None}, **kw)


def test_cuda_work_is_synchronized_around_every_timed_block(monkeypatch):
    events = []
    monkeypatch.setattr(measure, "synchronize", lambda device: events.append(("sync", str(device))))
    round_robin({"a": lambda: events.append("a"), "b": lambda: events.append("b")}, rounds=1, warmup=0,
                device="cuda:0")
    s = ("sync", "cuda:0")
    assert events == [s, s, "a", s, s, "b", s]
    events.clear()
    with duration(device="cuda:0"):
        events.append("work")
    assert events == [s, "work", s]


def test_synchronize_is_a_no_op_off_cuda():
    measure.synchronize(None)
    measure.synchronize("cpu")


def test_duration_times_the_block_and_is_set_even_when_it_raises():
    clock = FakeClock()
    with duration(clock=clock) as run:
        clock.now += 1.5
        assert run.seconds is None and run.elapsed() == 1.5
        clock.now += 1.0
    assert run.seconds == 2.5 and run.elapsed() == 2.5
    with pytest.raises(KeyError):
        with duration(clock=clock) as failed:
            clock.now += 0.5
            raise KeyError("x")
    assert failed.seconds == 0.5


def test_measure_latency_and_side_by_side_use_the_round_robin_timer(monkeypatch):
    from normapps.platform import profiling

    calls = []
    real = profiling.round_robin

    def spy(candidates, **kw):
        calls.append((list(candidates), kw))
        return real(candidates, **kw)

    monkeypatch.setattr(profiling, "round_robin", spy)
    net = torch.nn.Linear(4, 2)
    assert profiling.measure_latency(net, torch.rand(3, 4), warmup=1, repeats=2) > 0
    conv = lambda: torch.nn.Conv2d(1, 2, 3)  # noqa: E731
    out = profiling.side_by_side_latency({"a": conv(), "b": conv()}, (1, 5, 5), batch_sizes=(1, 2),
                                         rounds=2, repeats=1, threads=1)
    assert set(out) == {"a", "b"} and set(out["a"]) == {"latency_ms_bs1", "latency_ms_bs2"}
    assert calls[0][0] == ["fn"] and calls[0][1]["device"] == torch.device("cpu")
    # one round-robin over every (model, batch size) pair, not one timer per model
    assert calls[1][0] == [("a", 1), ("b", 1), ("a", 2), ("b", 2)] and calls[1][1]["threads"] == 1


def test_a_started_duration_stops_once():
    clock = FakeClock()
    run = measure.Duration.started(clock=clock)
    clock.now += 2.0
    assert run.stop() == 2.0
    clock.now += 5.0
    assert run.stop() == 2.0 and run.seconds == 2.0
    assert run.rate(3) == 1.5 and measure.Duration.started(clock=clock).rate(3) is None  # no time: no rate


def test_accuracy_restores_the_module_mode_and_can_run_a_model_as_given():
    from normapps.platform.predict import accuracy

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2), torch.nn.Dropout(0.9)).train()
    torch.nn.init.zeros_(net[1].bias)
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    x = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 3.0, 0, 0]]).view(3, 1, 2, 2)
    batches = [(x[:2], torch.tensor([0, 1])), (x[2:], torch.tensor([0]))]
    assert accuracy(net, batches) == 2 / 3 and net.training  # eval inside (no dropout), train after
    seen = []
    assert accuracy(lambda t: seen.append(t) or net.eval()(t), batches, eval_mode=False) == 2 / 3
    with pytest.raises(ValueError, match="at least one labelled batch"):
        accuracy(net, [])


def test_round_ratio_pairs_rounds_and_latency_tables_report_it_against_a_reference():
    from normapps.platform import profiling
    from normapps.platform.measure import Timing, round_ratio

    assert round_ratio(Timing(samples=(1.0, 3.0, 3.0)), Timing(samples=(2.0, 1.0, 4.0))) == 0.75
    with pytest.raises(ValueError, match="sample counts differ"):
        round_ratio(Timing(samples=(1.0,)), Timing(samples=(1.0, 2.0)))
    conv = lambda: torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).eval()  # noqa: E731
    models = {"a": conv(), "b": conv()}
    out = profiling.deployment_latency(models, (1, 6, 6), batch_sizes=(1,), rounds=2, repeats=1, reference="a")
    assert out["a"]["speedup_bs1"] == 1.0 and out["b"]["speedup_bs1"] > 0
    assert out["b"]["latency_format_bs1"] in ("nchw", "channels_last")
    with pytest.raises(ValueError, match="reference 'c'"):
        profiling.side_by_side_latency(models, (1, 6, 6), reference="c")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_timed_block_includes_the_kernels():
    """Without synchronization a CUDA matmul returns at launch; synchronized, its time shows."""
    x = torch.randn(4096, 4096, device="cuda")
    timing = round_robin({"mm": lambda: x @ x, "noop": lambda: None}, rounds=5, warmup=2, device=x.device,
                         reference="noop")
    assert timing["mm"].median_s > 10 * timing["noop"].median_s
    with duration(device=x.device) as run:
        for _ in range(10):
            x @ x
    assert run.seconds >= 5 * timing["mm"].median_s

"""The one way normapps times things: round-robin latency and run durations.

- :func:`round_robin` times several candidates interleaved, round after round, so load that
  drifts during a run (a shared machine, a GPU clocking down) hits every candidate alike; each
  candidate gets its median per call and the median of its per-round ratios against a reference
  (the figure to compare on a busy machine). Warm-up calls come first, torch's intra-op threads
  can be set for the measurement only (restored after, also on error), and CUDA work is
  synchronized around every timed call when the candidates run on a CUDA device.
- :func:`duration` is the wall clock of one run (a stylization pass, an adaptation method, a
  calibration): a context manager whose ``seconds`` is set on exit.
- :func:`num_threads` scopes ``torch.set_num_threads``; :func:`synchronize` waits for a
  device's queued work (a no-op off CUDA).

Model-level tables built on these (latency per batch size, BN-folded deployment latency) are in
``normapps.platform.profiling``; accuracy of a classifier is ``normapps.platform.predict.accuracy``.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Mapping

import torch

Clock = Callable[[], float]


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the work queued on ``device`` (CUDA kernels run asynchronously: without this a
    timer measures the launch, not the work). Nothing to wait for on the CPU."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def num_threads(threads: int | None) -> Iterator[int]:
    """torch's intra-op threads set to ``threads`` inside the block and restored after (also
    when the block raises); ``None`` leaves them as they are. Yields the count in effect."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a whole number >= 1 or None, got {threads!r}")
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(saved)


@dataclass
class Duration:
    """A run's wall clock. ``seconds`` is None while it runs and the elapsed time once stopped;
    :meth:`elapsed` reads the clock meanwhile. Use :func:`duration` around a block, or
    ``Duration.started()`` ... ``.stop()`` where the timed span is not one block."""
    clock: Clock = time.perf_counter
    device: torch.device | str | None = None
    start: float = 0.0
    seconds: float | None = None

    @classmethod
    def started(cls, *, device: torch.device | str | None = None, clock: Clock = time.perf_counter) -> "Duration":
        synchronize(device)
        return cls(clock=clock, device=device, start=clock())

    def stop(self) -> float:
        """Stop the clock (after the device's queued work) and return the seconds; a second
        call returns the same figure."""
        if self.seconds is None:
            synchronize(self.device)
            self.seconds = self.clock() - self.start
        return self.seconds

    def elapsed(self) -> float:
        return self.clock() - self.start if self.seconds is None else self.seconds

    def rate(self, count: int | float, *, digits: int = 3) -> float | None:
        """``count`` per second of the stopped run (images/s of an infer), rounded; None when
        no time was measured (an empty run)."""
        seconds = self.stop()
        return round(count / seconds, digits) if seconds > 0 else None


@contextlib.contextmanager
def duration(*, device: torch.device | str | None = None, clock: Clock = time.perf_counter) -> Iterator[Duration]:
    """Wall-clock seconds of the block: ``with duration() as run: ...; run.seconds``. With a
    CUDA ``device``, queued work is waited for before the clock starts and before it stops.
    ``seconds`` is set even when the block raises."""
    timer = Duration.started(device=device, clock=clock)
    try:
        yield timer
    finally:
        timer.stop()


@dataclass(frozen=True)
class Timing:
    """One candidate's result from :func:`round_robin`. ``samples``: seconds per call, one per
    round (a round's time divided by ``repeats``); ``ratios``: the reference's seconds over
    this candidate's, per round (> 1: faster than the reference), empty without a reference."""
    samples: tuple[float, ...]
    ratios: tuple[float, ...] = field(default=())

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples)

    @property
    def median_ms(self) -> float:
        return 1000.0 * self.median_s

    @property
    def speedup(self) -> float | None:
        """Median of the per-round ratios against the reference (None without a reference):
        robust to load that changes between rounds, unlike a ratio of medians."""
        return statistics.median(self.ratios) if self.ratios else None


def round_ratio(reference: Timing, candidate: Timing) -> float:
    """Median over rounds of the reference's seconds over the candidate's (> 1: the candidate
    is faster), for two candidates of the same :func:`round_robin` (their samples pair up by
    round)."""
    if len(reference.samples) != len(candidate.samples):
        raise ValueError("round_ratio pairs rounds of one round_robin: the sample counts differ "
                         f"({len(reference.samples)} vs {len(candidate.samples)})")
    return statistics.median(r / t if t > 0 else float("inf") for r, t in zip(reference.samples, candidate.samples))


def round_robin(
    candidates: Mapping[Hashable, Callable[[], Any]],
    *,
    rounds: int = 5,
    repeats: int = 1,
    warmup: int = 1,
    reference: Hashable | None = None,
    threads: int | None = None,
    device: torch.device | str | None = None,
    clock: Clock = time.perf_counter,
) -> dict[Hashable, Timing]:
    """Time zero-argument callables interleaved: ``warmup`` untimed calls of each (first calls
    pick kernels, allocate, compile), then ``rounds`` rounds in each of which every candidate,
    in the mapping's order, is called ``repeats`` times back to back and timed as one block.

    Returns ``{name: Timing}`` in the candidates' order. ``reference`` (a candidate's name)
    gives each Timing its per-round ratios. ``threads`` sets torch's intra-op threads for the
    measurement only. ``device``: where the candidates' work runs; on CUDA every timed block
    is synchronized before the clock starts and before it stops. Gradients are as the caller
    has them: wrap the call in ``torch.inference_mode()`` to time inference."""
    for name, value in (("rounds", rounds), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"round_robin {name} must be a whole number >= 1, got {value!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"round_robin warmup must be a whole number >= 0, got {warmup!r}")
    if not candidates:
        raise ValueError("round_robin needs at least one candidate")
    if reference is not None and reference not in candidates:
        raise ValueError(f"round_robin reference {reference!r} is not a candidate ({list(candidates)})")
    samples: dict[Hashable, list[float]] = {name: [] for name in candidates}
    with num_threads(threads):
        for fn in candidates.values():
            for _ in range(warmup):
                fn()
        synchronize(device)
        for _ in range(rounds):
            for name, fn in candidates.items():
                synchronize(device)
                t0 = clock()
                for _ in range(repeats):
                    fn()
                synchronize(device)
                samples[name].append((clock() - t0) / repeats)
    ref = samples[reference] if reference is not None else None
    return {name: Timing(samples=tuple(s),
                         ratios=tuple(r / t if t > 0 else float("inf") for r, t in zip(ref, s)) if ref else ())
            for name, s in samples.items()}

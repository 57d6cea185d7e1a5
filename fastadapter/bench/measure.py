"""How we measure: bytes saved for backward, interleaved median times, peak memory.

Used by benchmarks/ and `fastadapter bench`, so every figure is measured one way.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch


def saved_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> tuple[int, object]:
    """Bytes of the unique storages autograd saves for backward while fn() runs, leaving out the storages of
    `exclude` (parameters). Returns (bytes, fn's result): keep the result alive while you need the graph; a
    backward through it works as without the hooks (first order)."""
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        # Detached: a tensor an op saves of its own output (softmax, exp, the fused op's h) would otherwise hold
        # its grad_fn, which holds it — a cycle through C++ that outlives the graph when no backward frees it.
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return sum(storages.values()), result


def _synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int = 15, warmup: int = 2,
                        device: torch.device | str | None = None) -> dict[str, float]:
    """Median seconds of each callable, run in turn (a, b, c, a, b, c, ...) so that drift in machine load
    affects all of them alike. For CPU ratios; on GPU prefer triton.testing.do_bench."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _synchronize(device)
            start = time.perf_counter()
            fn()
            _synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def rss_bytes() -> int:
    """The process's resident set size now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS mark (VmHWM) at the current RSS, so that peak_rss_since_reset() measures
    what follows alone; False where /proc/self/clear_refs cannot be written."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_growth(fn: Callable[[], object]) -> tuple[int, float]:
    """(peak RSS growth in bytes, seconds) of one fn() call, the kernel's peak mark restarted just before it (so a
    warm-up's peak does not hide it). Call fn once first, to warm kernels, thread pools and first-touched pages."""
    import gc

    gc.collect()
    if not reset_peak_rss():
        raise OSError("peak RSS growth needs a writable /proc/self/clear_refs (Linux)")
    before = rss_bytes()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return peak_rss_since_reset() - before, seconds


def cuda_extra_memory(fn: Callable[[], object]) -> int:
    """Bytes fn() allocates on the current CUDA device at its peak beyond what was allocated before it (one warm
    call first)."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def peak_rss_since_reset() -> int:
    """VmHWM, the peak RSS since the last reset_peak_rss() (or since the process started)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


STEP_PHASES = ("forward", "backward", "optimizer")


class TrainStep(NamedTuple):
    seconds: float  # the whole step by the host's clock, the device synchronised at its end
    loss: torch.Tensor
    phases: dict[str, float]  # seconds of each of STEP_PHASES: host clock on CPU, CUDA events on GPU


def timed_train_step(model, batch: dict, optimizer, device: str = "cpu") -> TrainStep:
    """One training step of a Hugging Face model (forward, backward, optimizer step), timed whole and phase by
    phase. On GPU the phases come from CUDA events recorded between them, so timing them adds no
    synchronisation: the step runs as it would untimed."""
    cuda = torch.device(device).type == "cuda"
    marks = []

    def mark():
        if cuda:
            marks.append(torch.cuda.Event(enable_timing=True))
            marks[-1].record()
        else:
            marks.append(time.perf_counter())

    start = time.perf_counter()
    mark()
    loss = model(**batch).loss
    mark()
    loss.backward()
    mark()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    mark()
    _synchronize(device)
    seconds = time.perf_counter() - start
    spans = ([begin.elapsed_time(end) / 1e3 for begin, end in zip(marks, marks[1:])] if cuda else
             [end - begin for begin, end in zip(marks, marks[1:])])
    return TrainStep(seconds, loss.detach(), dict(zip(STEP_PHASES, spans)))

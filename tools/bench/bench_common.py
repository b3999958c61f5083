"""Shared helpers for the benchmark: importing the pack as `zimage_nodes` (tools/site), booting
ComfyUI, interleaved timing, forward-call counting, machine description."""

from __future__ import annotations

import datetime
import gc
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent
PACK_DIR = BENCH_DIR.parent.parent
PACK_NAME = "zimage_nodes"


# The pack as `zimage_nodes` (tools/site/zimage_nodes, as the tests import it); never the pack root on sys.path.
if str(PACK_DIR / "tools" / "site") not in sys.path:
    sys.path.append(str(PACK_DIR / "tools" / "site"))

from zimage_nodes.tools.forward_spy import ForwardSpy as ForwardCounter  # noqa: E402, F401  (the shared spy)


def boot_host(comfyui: str | None, cpu: bool):
    """ComfyUI booted in-process with the pack loaded through ComfyUI's own loader."""
    from zimage_nodes.tools import headless

    path, how = headless.find_comfyui(comfyui)
    if path is None:
        raise SystemExit(f"bench: {how}. Pass --comfyui PATH or set COMFYUI_PATH.")
    host = headless.boot(path, cpu=cpu)
    global CUDA_SYNC
    CUDA_SYNC = (not cpu) and torch.cuda.is_available()
    if not host.pack_loaded:
        raise SystemExit("bench: ComfyUI failed to load the pack (see its log above)")
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False  # same for every path; keeps the output a table
    return host


def pack_module(host, name: str):
    """A module of the pack as ComfyUI loaded it, e.g. "host.cfg_guider" to reach ZImageGuider."""
    import importlib

    return importlib.import_module(f"{host.pack.__name__}.{name}")


def set_threads(n: int | None) -> int:
    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set (parallel work started); harmless
    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------------
# Machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(comfy_version: str, device: str = "cpu") -> dict:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "comfyui": comfy_version,
        "os": f"{platform.system()} {platform.release()}",
    }
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except Exception:  # pragma: no cover
        info["diffusers"] = "absent"
    if CUDA_SYNC:
        info["gpu"] = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    elif torch.cuda.is_available():
        info["gpu"] = f"{torch.cuda.device_count()} CUDA device(s), not used by this process"
    else:
        info["gpu"] = "none"
    info["device"] = device
    return info


# ---------------------------------------------------------------------------------------------
# Timing


CUDA_SYNC = False  # set when ComfyUI is booted on the GPU; a CPU run never touches CUDA


def sync():
    if CUDA_SYNC:
        torch.cuda.synchronize()


def interleaved(fns: dict, rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall time of each callable, interleaved: A,B,C, then B,C,A, ... (the start rotates every
    round so no variant always runs right after the same one), after `warmup` untimed rounds.
    As timeit does, the garbage collector is off inside a timed call; it runs between rounds."""
    names = list(fns)
    times = {n: [] for n in names}
    for _ in range(warmup):
        for n in names:
            fns[n]()
    for r in range(rounds):
        gc.collect()
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            sync()
            gc.disable()
            try:
                t0 = time.perf_counter()
                fns[n]()
                sync()
                times[n].append(time.perf_counter() - t0)
            finally:
                gc.enable()
    return times


def median(xs):
    return statistics.median(xs)


def spread(xs) -> float:
    """Half the inter-quartile range relative to the median (a noise figure, in %)."""
    if len(xs) < 2:
        return float("nan")
    if len(xs) < 4:
        return 100.0 * (max(xs) - min(xs)) / 2 / statistics.median(xs)
    q = statistics.quantiles(xs, n=4)
    return 100.0 * (q[2] - q[0]) / 2 / statistics.median(xs)


# ---------------------------------------------------------------------------------------------
# Forward counting


class StubForward:
    """Replaces ComfyUI's NextDiT.forward with `zeros_like(x)` while active, so a sampling run
    costs only what surrounds the model: node, guider, sampler and ComfyUI's sampling machinery
    (for the batched guider: building the batch and splitting the output)."""

    def __enter__(self):
        import comfy.ldm.lumina.model as lumina

        self._cls = lumina.NextDiT
        self._orig = self._cls.__dict__["forward"]

        def stub(module, x, *args, **kwargs):
            return torch.zeros_like(x)

        self._cls.forward = stub
        return self

    def __exit__(self, *exc):
        self._cls.forward = self._orig
        return False


@contextmanager
def no_grad():
    with torch.inference_mode():
        yield


# ---------------------------------------------------------------------------------------------
# Table formatting


def fmt_s(x: float) -> str:
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.2f} ms"
    return f"{x * 1e6:.1f} us"


def fmt_bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)

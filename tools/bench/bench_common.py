"""Shared helpers for the benchmark: loading the pack without putting it on sys.path, booting
ComfyUI, interleaved timing, forward-call counting, machine description."""

from __future__ import annotations

import datetime
import gc
import importlib.util
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


def load_pack(name: str = PACK_NAME):
    """The pack as a package, by file path (as tests/conftest.py does). Never via sys.path: the
    pack's `nodes/` folder would shadow ComfyUI's top-level `nodes` module."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, PACK_DIR / "__init__.py", submodule_search_locations=[str(PACK_DIR)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def boot_host(comfyui: str | None, cpu: bool):
    """ComfyUI booted in-process with the pack loaded through ComfyUI's own loader."""
    load_pack()
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


def pack_module(host, node_id: str):
    """The module (as ComfyUI loaded it) that defines a pack node, e.g. to reach ZImageGuider."""
    return sys.modules[host.node_class(node_id).__module__]


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


class ForwardCounter:
    """Records the batch size of every ComfyUI NextDiT.forward call while active (a temporary
    class-level wrapper, removed on exit)."""

    def __init__(self):
        self.batches: list[int] = []

    def __enter__(self):
        import comfy.ldm.lumina.model as lumina

        self._cls = lumina.NextDiT
        self._orig = self._cls.__dict__["forward"]
        orig, batches = self._orig, self.batches

        def counted(module, x, *args, **kwargs):
            batches.append(int(x.shape[0]))
            return orig(module, x, *args, **kwargs)

        self._cls.forward = counted
        return self

    def __exit__(self, *exc):
        self._cls.forward = self._orig
        return False

    @property
    def calls(self) -> int:
        return len(self.batches)

    def summary(self) -> dict:
        return {
            "calls": self.calls,
            "samples": sum(self.batches),
            "desc": self.describe(),
            "batches": list(self.batches),
        }

    def describe(self) -> str:
        """'28 x b2' or '24 x b2 + 4 x b1'."""
        if not self.batches:
            return "0"
        counts = {}
        for b in self.batches:
            counts[b] = counts.get(b, 0) + 1
        return " + ".join(f"{n} x b{b}" for b, n in sorted(counts.items(), reverse=True))


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

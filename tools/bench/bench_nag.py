"""What NAG costs: Z-Image Turbo with the Z-Image NAG node against plain Turbo, with CFG beside it.

    python tools/bench/bench_nag.py [--comfyui PATH] [--side 512|1024|1536] [--steps 8] [--rounds 3]
                                    [--threads 1] [--quick]
    python tools/bench/bench_nag.py --gpu [--side 512 1024]   # full-size model, needs CUDA
    python tools/bench/bench_nag.py --gpu-dry-run    # the GPU code path on the CPU, tiny model

Paths, all --steps steps (8), euler, shift 3, the same model, latent, seed and captions:
  plain     ZINodesTurboSampler (one forward per step, the negative never evaluated)
  plain_sdpa  the same with ComfyUI's pytorch attention (torch SDPA) in the main and refiner layers:
            on the CPU ComfyUI's default is its sub-quadratic attention, slower than the torch
            kernel NAG uses in the main layers; with nag_sdpa below, the like-for-like pair
  nag       ZINodesNAG (sigma_end 0: NAG on every step) -> ZINodesTurboSampler; the shared-keys
            attention (image keys attended once for z+ and z-), kernel named in the output
  nag_win   the same with the previous two-window attention (window B attends over the image keys a
            second time, through ComfyUI's attention), for comparison
  nag_sdpa  nag with ComfyUI's pytorch attention for the layers NAG does not replace (refiners)
  nag_def   ZINodesNAG with its defaults (sigma_end 0.75: NAG on the first 5 of 8 steps)
  cfg       ModelSamplingAuraFlow(3) + KSampler at cfg 2 with the same negative (ComfyUI's CFG:
            positive and negative forwards every step)

Times: wall time per sampling run, median of interleaved rounds (the start rotates each round)
after one untimed run of each that also counts NextDiT.forward calls; ratios are of medians
measured in this one run. Peak memory over a run, above what was allocated before it: on the GPU
torch.cuda.max_memory_allocated(); on the CPU the peak of live tensor storage created during the
run, tracked by a TorchDispatchMode (ATen op outputs; measured in a separate untimed run). The NAG self-check (a few tiny forwards, once per model)
runs before any measurement. Nothing here asserts: it measures and prints.

CPU model: random-weight Z-Image DiT of width 1152 (9 heads of 128), 2 main layers, 1+1
refiners; --side 512 (64x64 latent, 1024 image tokens, the default) or 1024 (4096 tokens).
GPU model: the full-size Z-Image DiT in bfloat16, --side 512 and 1024 by default. --paths runs a
subset (plain and nag always).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import bench_common as bc  # noqa: E402
import bench_sampling as bs  # noqa: E402
import torch  # noqa: E402
from torch.multiprocessing.reductions import StorageWeakRef  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from zimage_nodes.tools import demo_weights, sampling_paths  # noqa: E402
from zimage_nodes.tools.forward_spy import NagCallSpy  # noqa: E402  (importable once bench_common loaded the pack)

CPU_SIZE = dict(dim=1152, n_layers=2, n_refiner_layers=1, n_heads=9, cap_feat_dim=64)
STEPS, SHIFT, CFG, SEED = 8, 3.0, 2.0, 42
POS_TOKENS, NEG_TOKENS = 100, 60  # pad to 128 and 64
TARGETS = {"cpu": 1.30, "gpu": 1.25}
# Issue 16's targets for NAG every step / plain, per side (CPU, width 1152, 2 main layers, 1 thread).
SIDE_TARGETS = {512: 1.06, 1024: 1.08}
PATHS = ("plain", "plain_sdpa", "nag", "nag_sdpa", "nag_win", "nag_def", "cfg")
PEAK_TARGET = 0.05  # extra peak at 1024x1024 under 5% of plain Turbo's


def log(msg: str):
    print(f"[bench_nag {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Peak memory


class _LiveTensors(TorchDispatchMode):
    """Bytes of tensor storage created while active and still alive, and their peak. Counts what
    ATen ops return (the temporaries inside one fused kernel are not seen), so it is a lower bound
    per run, but the same bound for every path: a like-for-like CPU measure, free of the process
    allocator's caching that makes resident-set numbers swing by megabytes."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages: dict[int, tuple[StorageWeakRef, int]] = {}

    def _sweep(self):
        for key in [k for k, (ref, _) in self._storages.items() if ref.expired()]:
            self.live -= self._storages.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._sweep()
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu" and not t.is_meta:
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self._storages:
                    self._storages[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        return out


class Peak:
    """Peak memory of one call above what was allocated before it: the CUDA allocator's peak, or
    on the CPU the peak of live tensor storage created during the call (_LiveTensors)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __enter__(self):
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.mode = _LiveTensors()
            self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.extra = torch.cuda.max_memory_allocated() - self.base
        else:
            self.mode.__exit__(*exc)
            self.extra = self.mode.peak
        return False


# ---------------------------------------------------------------------------------------------
# Timing


def _interleaved(fns: dict, rounds: int) -> tuple[dict, dict]:
    """bench_common.interleaved's rotation, recording wall time and this process's CPU time.

    On a CPU shared with other jobs, wall time also counts the time slices the other jobs take
    (runs here swung by +-60% in wall time); with torch on one thread the process's CPU time is
    the work done, and the ratio of CPU times is the cost ratio. On a GPU wall time is the measure."""
    names = list(fns)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(rounds):
        gc.collect()
        for n in names[r % len(names) :] + names[: r % len(names)]:
            bc.sync()
            gc.disable()
            try:
                w0, c0 = time.perf_counter(), time.process_time()
                fns[n]()
                bc.sync()
                wall[n].append(time.perf_counter() - w0)
                cpu[n].append(time.process_time() - c0)
            finally:
                gc.enable()
    return wall, cpu


# ---------------------------------------------------------------------------------------------


@contextmanager
def _pytorch_attention():
    """ComfyUI's pytorch attention (torch SDPA) for Z-Image's attention layers inside (bench-side)."""
    import comfy.ldm.lumina.model as lumina
    import comfy.ldm.modules.attention as attention

    original = lumina.optimized_attention_masked
    lumina.optimized_attention_masked = attention.attention_pytorch
    try:
        yield
    finally:
        lumina.optimized_attention_masked = original


@contextmanager
def _two_windows(nag_mod):
    """The previous two-window attention for the NAG calls inside (a bench-side switch of the patch's
    path choice; the self-check of that path runs as in production)."""
    original = nag_mod.attention_path

    def windows(dm, options, device, dtype):
        ok, why = nag_mod.zimage_nag.self_check(
            dm, options, guard=nag_mod.GUARD, attention="windows", device=device, dtype=dtype
        )
        return ("windows" if ok else None), why

    nag_mod.attention_path = windows
    try:
        yield
    finally:
        nag_mod.attention_path = original


def run(host, size: dict, side: int, rounds: int, device_kind: str, steps: int = STEPS, paths_wanted=None) -> dict:
    paths_wanted = set(paths_wanted or PATHS) | {"plain", "nag"}
    import comfy.model_management as mm

    nag_mod = bc.pack_module(host, "host.nag_patch")
    device = mm.get_torch_device()
    cuda = bc.CUDA_SYNC  # False for --gpu-dry-run, which runs the GPU path's code on the CPU
    if device_kind == "gpu":
        import bench_gpu

        model = bench_gpu.comfy_model(size, device)
    else:
        model = bs.build_model(host, size)
    cap = size["cap_feat_dim"]
    dtype = torch.bfloat16 if device_kind == "gpu" else torch.float32
    pos = bs.caption(POS_TOKENS, cap, 1, dtype=dtype)
    neg = bs.caption(NEG_TOKENS, cap, 2, dtype=dtype)
    latent = bs.empty_latent(side // 8)

    # The one-time self-check, out of every measurement.
    dm = model.model.diffusion_model
    ok, why = nag_mod.verified(dm, {}, device, dtype)
    if not ok:
        raise SystemExit(f"bench_nag: NAG self-check failed on this host: {why}")

    models = {
        "plain": model,
        "plain_sdpa": model,
        "nag_sdpa": sampling_paths.nag_model(host, model, neg, sigma_end=0.0),
        "nag": sampling_paths.nag_model(host, model, neg, sigma_end=0.0),
        "nag_win": sampling_paths.nag_model(host, model, neg, sigma_end=0.0),
        "nag_def": sampling_paths.nag_model(host, model, neg),
    }
    paths = {}
    out = {}

    def turbo(name):
        def fn():
            if name == "nag_win":
                switch = _two_windows(nag_mod)
            elif name.endswith("_sdpa"):
                switch = _pytorch_attention()
            else:
                switch = _nothing()
            with switch:
                out[name] = sampling_paths.turbo_sampler(
                    host, models[name], pos, latent, seed=SEED, steps=steps, shift=SHIFT
                )["samples"]
            patch = nag_mod.nag_patch_of(models[name])
            if patch is not None:
                paths[name] = patch.attention

        return fn

    def cfg():
        out["cfg"] = sampling_paths.template_ksampler(
            host, model, pos, neg, latent, steps=steps, cfg=CFG, seed=SEED, shift=SHIFT
        )["samples"]

    fns = {name: turbo(name) for name in PATHS if name != "cfg" and name in paths_wanted}
    if "cfg" in paths_wanted:
        fns["cfg"] = cfg
    counts, peaks = {}, {}
    nag_calls = {}
    with bc.no_grad():
        for name, fn in fns.items():  # untimed: warm-up with forwards and NAG calls counted
            with bc.ForwardCounter() as fc, NagCallSpy(nag_mod) as spy:
                fn()
            counts[name] = fc.summary()
            if name.startswith("nag"):
                nag_calls[name] = spy.counts
        for name, fn in fns.items():  # untimed: peak memory, every path already warm
            with Peak(cuda) as p:
                fn()
            peaks[name] = p.extra
            log(f"{name}: {counts[name]['desc']} forwards, peak {bc.fmt_bytes(p.extra)} over the run")
        times, cpu_times = _interleaved(fns, rounds)
    return {
        "size": size,
        "side": side,
        "rounds": rounds,
        "times": times,
        "cpu_times": cpu_times,
        "counts": counts,
        "peaks": peaks,
        "nag_calls": nag_calls,
        "nag_effect": float((out["nag"] - out["plain"]).abs().max()),
        "shared_vs_windows": float((out["nag"] - out["nag_win"]).abs().max()) if "nag_win" in out else None,
        "paths": paths,
        "kernel": bc.pack_module(host, "core.nag_attention").kernel_for(device, dtype, size["dim"] // size["n_heads"]),
        "steps": steps,
        "device": device_kind,
    }


@contextmanager
def _nothing():
    yield


LABELS = {
    "plain": "Turbo, plain (ZINodesTurboSampler)",
    "plain_sdpa": "Turbo, plain, ComfyUI's pytorch attention (SDPA)",
    "nag_sdpa": "Turbo + ZINodesNAG every step, shared keys, ComfyUI's pytorch attention elsewhere",
    "nag": "Turbo + ZINodesNAG, NAG every step (sigma_end 0), shared keys",
    "nag_win": "the same, previous two-window attention",
    "nag_def": "Turbo + ZINodesNAG, defaults (sigma_end 0.75)",
    "cfg": f"ComfyUI CFG: KSampler cfg {CFG:g} with the negative",
}


def report(r: dict, info: dict) -> str:
    gpu = r["device"] == "gpu" and bc.CUDA_SYNC
    primary = r["times"] if gpu else r["cpu_times"]
    med = {n: bc.median(t) for n, t in primary.items()}
    wall = {n: bc.median(t) for n, t in r["times"].items()}
    rows = []
    for n in [n for n in PATHS if n in med]:
        rows.append(
            [
                LABELS[n],
                bc.fmt_s(med[n]),
                f"{bc.spread(primary[n]):.1f}%",
                f"**{med[n] / med['plain']:.3f}**",
                f"{bc.fmt_s(wall[n])} ({wall[n] / wall['plain']:.3f})",
                r["counts"][n]["desc"],
                bc.fmt_bytes(r["peaks"][n]),
                f"{(r['peaks'][n] - r['peaks']['plain']) / 2**20:+.1f} MiB",
            ]
        )
    s = r["size"]
    target = TARGETS[r["device"]] if gpu else SIDE_TARGETS.get(r["side"], TARGETS["cpu"])
    ratio = med["nag"] / med["plain"]
    extra = (r["peaks"]["nag"] - r["peaks"]["plain"]) / max(r["peaks"]["plain"], 1)
    others = []
    like = ""
    if "nag_sdpa" in med and "plain_sdpa" in med:
        others.append(("NAG / plain, both with ComfyUI's pytorch attention", med["nag_sdpa"] / med["plain_sdpa"]))
        sdpa_extra = (r["peaks"]["nag_sdpa"] - r["peaks"]["plain_sdpa"]) / max(r["peaks"]["plain_sdpa"], 1)
        like = f"; both with ComfyUI's pytorch attention: {100 * sdpa_extra:+.1f}%"
    for name, label in (("nag_win", "two windows"), ("nag_def", "defaults"), ("cfg", "CFG")):
        if name in med:
            others.append((label, med[name] / med["plain"]))
    measure = "wall time (CUDA synchronised)" if gpu else "process CPU time (torch on 1 thread)"
    lines = [
        "## NAG cost: Z-Image NAG vs plain Turbo (and CFG)",
        "",
        f"- {info['date']}; {info['cpu']} ({info['cores']} cores, torch threads {info['threads']}); GPU: {info['gpu']}",
        f"- torch {info['torch']}, ComfyUI {info['comfyui']}; command: `python tools/bench/bench_nag.py "
        + " ".join(sys.argv[1:])
        + "`",
        f"- model: random-weight Z-Image DiT, width {s['dim']} ({s['n_heads']} heads of 128), {s['n_layers']} main "
        f"layers, {s['n_refiner_layers']}+{s['n_refiner_layers']} refiners; {r['side']}x{r['side']}; {r['steps']} steps; "
        f"captions: positive {POS_TOKENS} tokens, negative {NEG_TOKENS}; {r['rounds']} interleaved rounds; "
        f"ratios of medians of {measure}",
        "",
        bc.md_table(
            [
                "path",
                "median",
                "+-",
                "ratio vs plain",
                "wall median (ratio)",
                "NextDiT.forward calls",
                "peak over run",
                "extra peak vs plain",
            ],
            rows,
        ),
        "",
        f"NAG every step / plain Turbo: **{ratio:.3f}** (target <= {target:.2f}: {'met' if ratio <= target else 'NOT met'}); "
        + "".join(f"{label}: {value:.3f}; " for label, value in others)
        + f"Extra peak of NAG: {100 * extra:+.1f}% of plain's"
        + (
            f" (target < {100 * PEAK_TARGET:.0f}%: {'met' if extra < PEAK_TARGET else 'NOT met'})"
            if r["side"] >= 1024
            else ""
        )
        + like
        + f". NAG attention path per row: {r['paths']}, kernel: {r['kernel']}. NAG calls per run: {r['nag_calls']}. "
        f"Max |NAG - plain| on the latent: {r['nag_effect']:.3g}; max |shared keys - two windows|: "
        + (f"{r['shared_vs_windows']:.3g}." if r["shared_vs_windows"] is not None else "not measured."),
    ]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH or ../ComfyUI)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--quick", action="store_true", help="256x256, 1 round: checks the script, not for quoting")
    p.add_argument(
        "--side",
        type=int,
        nargs="+",
        help="image side(s) in pixels, multiples of 16, one table each (default: 512 on the CPU, 512 and 1024 with --gpu)",
    )
    p.add_argument("--steps", type=int, default=STEPS, help=f"sampling steps per run (default {STEPS})")
    p.add_argument("--paths", nargs="+", choices=PATHS, help="paths to run (default all; plain and nag always run)")
    p.add_argument("--gpu", action="store_true", help="full-size model on CUDA, bfloat16 (512 and 1024 by default)")
    p.add_argument("--gpu-dry-run", action="store_true", help="the GPU path's code on the CPU, tiny model")
    p.add_argument("--results", help="also write the markdown table to this file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    gpu = args.gpu and not args.gpu_dry_run
    if gpu and not torch.cuda.is_available():
        raise SystemExit("bench_nag: --gpu needs CUDA, and torch sees no CUDA device here")
    bc.set_threads(None if gpu else args.threads)
    logging.getLogger().setLevel(logging.ERROR)
    host = bc.boot_host(args.comfyui, cpu=not gpu)
    logging.getLogger().setLevel(logging.ERROR)
    for side in args.side or ():
        if side < 16 or side % 16:
            raise SystemExit(f"bench_nag: --side must be a multiple of 16 (at least 16), got {side}")
    if args.steps < 1:
        raise SystemExit(f"bench_nag: --steps must be at least 1, got {args.steps}")
    if gpu:
        runs = [(demo_weights.FULL, side, args.rounds, "gpu") for side in args.side or (512, 1024)]
    elif args.gpu_dry_run:
        runs = [(demo_weights.TINY, side, 1, "gpu") for side in args.side or (128,)]
    else:
        sides = (256,) if args.quick else (args.side or (512,))
        runs = [(CPU_SIZE, side, 1 if args.quick else args.rounds, "cpu") for side in sides]
    tables = []
    for size, side, rounds, kind in runs:
        r = run(host, size, side, rounds, kind, args.steps, args.paths)
        tables.append(report(r, bc.machine(host.version, "cuda" if gpu else "cpu")))
        print(tables[-1], flush=True)
    text = "\n\n".join(tables)
    if args.results:
        Path(args.results).write_text(text + "\n")


if __name__ == "__main__":
    main()

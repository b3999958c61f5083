"""Z-Image Nodes benchmark: the pack's nodes against ComfyUI's own (and diffusers' on a GPU).

    python tools/bench/run.py [--comfyui PATH] [--quick] [--gpu] [--threads N]

Sections (one table each, printed and, for a full run, written to tools/bench/RESULTS.md):
  1. Turbo: ZImageTurboSampler vs ModelSamplingAuraFlow(3) + KSampler(cfg 1): time, forwards.
  2. Guided Base: ZImageCFGGuider (batched, unbatched, truncation 0.9/0.5) vs CFGGuider at cfg 5.
  3. The blend: core cfg_blend vs `uncond + (cond - uncond) * cfg`: time and bytes allocated.
  4. inspect_model on a ~10 MB file and on a 12 GB sparse full-size file.
  5. GPU (only with CUDA): full-size Z-Image at 1024x1024 through our nodes, ComfyUI's and diffusers'.

Sections 1-4 run on the CPU with a small random Z-Image (ComfyUI booted with cpu=True). Section 5
needs ComfyUI booted on the GPU, so a default run starts it in a child process (`--gpu` runs only
section 5, in this process). Nothing here asserts: it measures and prints.

The pack is loaded by ComfyUI's own custom-node loader (headless.boot), never via sys.path.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # running as a script already puts bench/ first; importing does not
    sys.path.insert(0, str(BENCH))

import bench_common as bc  # noqa: E402
import torch  # noqa: E402

# Small model for the CPU sections: width 512 = 4 heads of 128, 2 main layers, 1+1 refiners.
CPU_MODEL = dict(dim=512, n_layers=2, n_refiner_layers=1, n_heads=4, cap_feat_dim=64)
POS_TOKENS, NEG_TOKENS = 60, 20

# Sizes and repetitions: a full run (the one RESULTS.md quotes) and --quick (a smoke run), as one
# table so each knob's two values sit side by side.
_PRESETS = {  # knob: (full, quick)
    "side": (256, 128),
    "turbo_steps": (8, 8),
    "turbo_rounds": (7, 2),
    "guided_steps": (28, 8),
    "guided_rounds": (4, 1),
    "overhead_rounds": (31, 5),
    "blend_rounds": (15, 3),
    "blend_calls": (20, 5),
    "inspect_reps": (30, 5),
    "gpu_rounds": (3, 1),
}
FULL = {knob: full for knob, (full, _) in _PRESETS.items()}
QUICK = {knob: quick for knob, (_, quick) in _PRESETS.items()}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH, the ComfyUI this pack sits in, ../ComfyUI)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (< 1 min on 2 cores): fewer repetitions, 128x128, 8 guided steps; not for quoting",
    )
    p.add_argument(
        "--gpu", action="store_true", help="run only section 5 (GPU), booting ComfyUI on the GPU in this process"
    )
    p.add_argument("--no-gpu", action="store_true", help="skip section 5 even when CUDA is available")
    p.add_argument(
        "--gpu-dry-run",
        action="store_true",
        help="run section 5's code on the CPU with a tiny model (checks the code path; numbers mean nothing)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: see RESULTS.md for why)")
    p.add_argument(
        "--results",
        help="write the markdown report here (default: tools/bench/RESULTS.md for a full CPU run, nowhere for --quick)",
    )
    p.add_argument("--json-out", help=argparse.SUPPRESS)  # used by the parent for the GPU child process
    return p.parse_args(argv)


def log(msg: str):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class _QuietBoot(logging.Filter):
    """ComfyUI logs every optional core node that fails to import (torchaudio etc.) with a
    traceback; the benchmark does not use them. Counted, not printed."""

    def __init__(self):
        super().__init__()
        self.dropped = 0

    def filter(self, record):
        if (
            record.levelno < logging.ERROR
            or "IMPORT FAILED" in record.getMessage()
            or "Traceback" in record.getMessage()
        ):
            self.dropped += 1
            return False
        return True


def boot(args, cpu: bool):
    quiet = _QuietBoot()
    root = logging.getLogger()
    root.addFilter(quiet)
    for h in root.handlers:
        h.addFilter(quiet)
    try:
        host = bc.boot_host(args.comfyui, cpu=cpu)
    finally:
        root.removeFilter(quiet)
        for h in root.handlers:
            h.removeFilter(quiet)
    logging.getLogger().setLevel(logging.ERROR)  # per-run notices of the nodes are not benchmark output
    try:
        import diffusers

        diffusers.utils.logging.set_verbosity_error()
    except Exception:
        pass
    return host


def command_line(argv) -> str:
    shown = [a for a in argv if not a.startswith("--json-out")]
    return "python tools/bench/run.py" + ("" if not shown else " " + " ".join(shlex.quote(a) for a in shown))


# ---------------------------------------------------------------------------------------------
# Rendering


def _pm(x):
    return "-" if x != x else f"{x:.1f}%"


def render_header(info: dict, cmd: str, settings: dict, quick: bool) -> str:
    lines = [
        "# Z-Image Nodes benchmark" + (" (QUICK smoke run: not for quoting)" if quick else ""),
        "",
        f"- Date: {info['date']}",
        f"- Machine: {info['cpu']}, {info['cores']} cores ({info['os']}); GPU: {info['gpu']}",
        f"- Software: Python {info['python']}, torch {info['torch']}, ComfyUI {info['comfyui']}, diffusers {info['diffusers']}",
        f"- torch threads: {info['threads']} (intra-op; interop 1); load average at start / end: {settings.get('load', '?')}",
        f"- Command: `{cmd}`",
    ]
    return "\n".join(lines)


def render_cpu_setup(s: dict) -> str:
    m = s["model"]
    side = s["side"]
    return (
        f"CPU sections: random-weight Z-Image DiT, width {m['dim']} ({m['n_heads']} heads of 128), {m['n_layers']} layers, "
        f"{m['n_refiner_layers']}+{m['n_refiner_layers']} refiners, caption width {m['cap_feat_dim']}, {s['dtype']}, "
        f"built by the Z-Image Loader's own `build_zimage_model`; {side}x{side} image (latent {side // 8}x{side // 8}); "
        f"captions: positive {POS_TOKENS} tokens, negative {NEG_TOKENS} tokens (random features, "
        f"CONDITIONING `[[tensor, {{}}]]`). Times are wall time per sampling run (garbage collector off inside a run, "
        f"as timeit does), median of interleaved rounds "
        f"(A,B,C,... with the starting variant rotated each round) after one untimed run of each that also "
        f"counts `NextDiT.forward` calls (a temporary class-level wrapper); +- is half the inter-quartile range "
        f"(half the range below 4 rounds) in % of the median. torch runs on {s['threads']} thread(s) (`--threads`, "
        "default 1): on a small shared machine two OpenMP threads next to other load made one forward swing between "
        "0.6 and 4.5 s where one thread gave a steady 0.28-0.40 s, and ratios need steady times more than fast ones."
    )


def render_turbo(r: dict, title_suffix: str = "") -> str:
    t, c = r["times"], r["counts"]
    base = bc.median(t["official"])
    rows = []
    labels = {
        "official": "ComfyUI template: ModelSamplingAuraFlow(3) + KSampler (cfg 1, euler, simple)",
        "ours": "ZImageTurboSampler (shift 3, euler)",
    }
    for n in ("official", "ours"):
        same = "-" if n == "official" else ("identical" if r["max_diff"] == 0 else f"max abs diff {r['max_diff']:.2e}")
        rows.append(
            [
                labels[n],
                bc.fmt_s(bc.median(t[n])),
                _pm(bc.spread(t[n])),
                bc.fmt_s(min(t[n])),
                f"{bc.median(t[n]) / base:.3f}",
                c[n]["desc"],
                same,
            ]
        )
    return f"## 1. Turbo: {r['steps']} steps{title_suffix}\n\n{len(t['ours'])} timed rounds.\n\n" + bc.md_table(
        ["path", "median", "+-", "min", "ratio vs template (medians)", "NextDiT.forward calls", "output vs template"],
        rows,
    )


def render_overhead(r: dict, ref: str) -> str:
    t = r["times"]
    labels = r.get("labels") or {
        "official": "ComfyUI template (ModelSamplingAuraFlow + KSampler)",
        "ours": "ZINodesTurboSampler",
    }
    base = bc.median(t[ref])
    rows = [
        [
            labels[n],
            bc.fmt_s(bc.median(t[n])),
            _pm(bc.spread(t[n])),
            bc.fmt_s(min(t[n])),
            f"{bc.median(t[n]) / base:.3f}",
        ]
        for n in labels
    ]
    return (
        f"Overhead, the same runs with `NextDiT.forward` stubbed out (returns zeros; {len(t[ref])} rounds): what each "
        "path costs around the model: node, guider, ComfyUI's condition handling and sampler, and for the batched "
        "guider building the batch and splitting its output. Everything inside `NextDiT.forward` is model time and "
        "stubbed with it: ComfyUI's patchify/embedding and, for the batched guider, its DIFFUSION_MODEL wrapper "
        "(`zimage_batched.batched_forward`: per-sample caption padding, masks, RoPE ids).\n\n"
        + bc.md_table(["path", "median", "+-", "min", "ratio"], rows)
    )


def render_guided(r: dict, title_suffix: str = "") -> str:
    t, c = r["times"], r["counts"]
    steps = r["steps"]
    base = bc.median(t["comfy"])
    comfy_negs = c["comfy"]["samples"] - steps
    rows = []
    for n, label in r["labels"].items():
        negs = c[n]["samples"] - steps
        rel = r["diffs"][n] / r["ref_scale"] if r["ref_scale"] else float("nan")
        rows.append(
            [
                label,
                bc.fmt_s(bc.median(t[n])),
                _pm(bc.spread(t[n])),
                bc.fmt_s(min(t[n])),
                f"{bc.median(t[n]) / base:.3f}",
                c[n]["desc"],
                str(negs),
                str(comfy_negs - negs),
                "-" if n == "comfy" else f"{rel:.1e}" + (" (truncated: by design)" if negs < comfy_negs else ""),
            ]
        )
    guided_steps = {n: c[n]["samples"] - steps for n in r["labels"]}
    return (
        f"## 2. Guided Base: cfg {r['cfg']:g}, {steps} steps, shift {r['shift']:g}, euler, simple, SamplerCustomAdvanced{title_suffix}\n\n"
        f"Same model, noise, sigmas and sampler for every guider; {len(t['comfy'])} timed rounds. "
        f'"negative evals" = samples run through the model minus one per step (the positive).\n\n'
        + bc.md_table(
            [
                "guider",
                "median",
                "+-",
                "min",
                "ratio vs CFGGuider (medians)",
                "NextDiT.forward calls",
                "negative evals",
                "negatives saved",
                "max abs diff vs CFGGuider (rel.)",
            ],
            rows,
        )
        + "\n\n"
        + _truncation_note(r, guided_steps)
    )


def _truncation_note(r: dict, guided: dict) -> str:
    sig = r["sigmas"][:-1]
    parts = []
    for name, c in (("ours_t09", 0.9), ("ours_t05", 0.5)):
        if name in guided:
            parts.append(
                f"cfg_truncation {c}: guidance on while 1 - sigma <= {c}, i.e. {guided[name]} of {len(sig)} steps"
            )
    last = sig[-1] if sig else float("nan")
    return (
        f"Truncation on this schedule: the last non-zero sigma is {last:.3f} (shift {r['shift']:g}), so 1 - sigma never "
        f"exceeds {1 - last:.3f}. " + "; ".join(parts) + ". On truncated steps the guided prediction is the positive "
        "alone, so those runs differ from CFGGuider's by design."
    )


def _within_noise(ratio: float, *spreads: float) -> tuple[str, str]:
    """(verdict, noise text): ratio <= 1 + combined relative spread (the +- figures in quadrature)."""
    if any(x != x for x in spreads):
        return "n/a (too few rounds)", "noise unknown"
    noise = sum((x / 100) ** 2 for x in spreads) ** 0.5
    return ("yes" if ratio <= 1 + noise else "NO"), f"noise +-{100 * noise:.1f}%"


def render_summary(
    turbo: dict,
    guided: dict,
    blend_rows: list,
    inspect_rows: list,
    gpu: dict | None,
    turbo_oh: dict | None = None,
    guided_oh: dict | None = None,
) -> str:
    rows = []
    t = turbo["times"]
    ratio = bc.median(t["ours"]) / bc.median(t["official"])
    ok, noise = _within_noise(ratio, bc.spread(t["ours"]), bc.spread(t["official"]))
    rows.append(["1. Turbo time, ZImageTurboSampler / template", "<= 1.00 within noise", f"{ratio:.3f} ({noise})", ok])
    if turbo_oh is not None:
        t = turbo_oh["times"]
        ratio = bc.median(t["ours"]) / bc.median(t["official"])
        ok, noise = _within_noise(ratio, bc.spread(t["ours"]), bc.spread(t["official"]))
        rows.append(
            [
                "1. Turbo overhead (NextDiT.forward stubbed), ours / template",
                "<= 1.00 within noise",
                f"{ratio:.3f} ({bc.fmt_s(bc.median(t['ours']))} vs {bc.fmt_s(bc.median(t['official']))}; {noise})",
                ok,
            ]
        )
    calls = turbo["counts"]["ours"]["calls"]
    rows.append(
        [
            "1. Turbo forward calls",
            f"= steps ({turbo['steps']})",
            f"{calls} ({turbo['counts']['ours']['desc']})",
            "yes" if calls == turbo["steps"] and turbo["counts"]["ours"]["samples"] == turbo["steps"] else "NO",
        ]
    )
    c, steps = guided["counts"], guided["steps"]
    rows.append(
        [
            "2. Guided forwards, ZImageCFGGuider",
            f"{steps} x b2",
            c["ours"]["desc"],
            "yes" if c["ours"]["desc"] == f"{steps} x b2" else "NO",
        ]
    )
    rows.append(
        [
            "2. Guided forwards, ComfyUI CFGGuider",
            f"{2 * steps} x b1",
            c["comfy"]["desc"],
            "yes" if c["comfy"]["desc"] == f"{2 * steps} x b1" else "NO",
        ]
    )
    gt = guided["times"]
    for n in ("ours", "ours_seq", "ours_t09", "ours_t05"):
        if n not in gt:
            continue
        r = bc.median(gt[n]) / bc.median(gt["comfy"])
        ok, noise = _within_noise(r, bc.spread(gt[n]), bc.spread(gt["comfy"]))
        saved = c["comfy"]["samples"] - c[n]["samples"]
        rows.append(
            [
                f"2. Guided time, {guided['labels'][n]} / CFGGuider",
                "<= 1.00 within noise",
                f"{r:.3f} ({noise}; {saved} negative evals saved)",
                ok,
            ]
        )
    if guided_oh is not None:
        gt = guided_oh["times"]
        for n in ("ours", "ours_seq"):
            r = bc.median(gt[n]) / bc.median(gt["comfy"])
            ok, noise = _within_noise(r, bc.spread(gt[n]), bc.spread(gt["comfy"]))
            rows.append(
                [
                    f"2. Guided overhead (NextDiT.forward stubbed), {guided_oh['labels'][n]} / CFGGuider",
                    "<= 1.00 within noise",
                    f"{r:.3f} ({bc.fmt_s(bc.median(gt[n]))} vs {bc.fmt_s(bc.median(gt['comfy']))}; {noise})",
                    ok,
                ]
            )
    slower = [
        f"{b['dtype']} b{b['batch']} norm {'on' if b['norm'] else 'off'}"
        for b in blend_rows
        if b["cfg_blend"]["time"] > b["textbook"]["time"]
    ]
    more_mem = [
        f"{b['dtype']} b{b['batch']} norm {'on' if b['norm'] else 'off'}"
        for b in blend_rows
        if b["cfg_blend"]["temps"] > b["textbook"]["temps"]
    ]
    rows.append(
        [
            "3. cfg_blend time <= textbook",
            "every row",
            "slower on: " + ", ".join(slower) if slower else "all rows",
            "NO" if slower else "yes",
        ]
    )
    rows.append(
        [
            "3. cfg_blend temporaries <= textbook",
            "every row",
            "more on: " + ", ".join(more_mem) if more_mem else "all rows",
            "NO" if more_mem else "yes",
        ]
    )
    small = next(r for r in inspect_rows if r["name"] == "small")
    big = next(r for r in inspect_rows if r["name"] == "sparse")
    q = big["median"] / small["median"]
    rows.append(
        [
            "4. inspect_model, 11 GiB sparse vs ~12 MiB file",
            "same order (< 10x)",
            f"{bc.fmt_s(big['median'])} vs {bc.fmt_s(small['median'])} ({q:.1f}x; {big['tensors']} vs {small['tensors']} tensors)",
            "yes" if q < 10 else "NO",
        ]
    )
    if gpu is not None and not gpu.get("dry_run"):
        by = {(r["model"], r["path"].split(":")[0]): r for r in gpu["rows"]}
        for model in ("Turbo", "Base"):
            ours, native = by.get((model, "ours")), by.get((model, "ComfyUI"))
            if ours and native:
                r = ours["median"] / native["median"]
                ok, noise = _within_noise(r, ours["spread"], native["spread"])
                rows.append(
                    [f"5. GPU {model}, ours / ComfyUI native", "<= 1.00 within noise", f"{r:.3f} ({noise})", ok]
                )
    return "## Summary against the targets\n\n" + bc.md_table(["check", "target", "measured", "met"], rows)


def render_blend(rows: list, meta: dict) -> str:
    out, hidden = [], []
    for row in rows:
        tb, cb = row["textbook"], row["cfg_blend"]
        out.append(
            [
                row["dtype"],
                row["batch"],
                "on (1.0)" if row["norm"] else "off",
                f"{bc.fmt_s(tb['time'])} ({_pm(tb['spread'])})",
                f"{bc.fmt_s(cb['time'])} ({_pm(cb['spread'])})",
                f"{cb['time'] / tb['time']:.2f}",
                f"{bc.fmt_bytes(tb['bytes'])} / {bc.fmt_bytes(tb['temps'])} / {tb['tensors']}",
                f"{bc.fmt_bytes(cb['bytes'])} / {bc.fmt_bytes(cb['temps'])} / {cb['tensors']}",
                f"{row['rel_diff']:.1e}",
            ]
        )
        for n in ("textbook", "cfg_blend"):
            gap = row[n]["bytes"] - row[n]["dispatch_bytes"]
            if abs(gap) > 1024:
                hidden.append(
                    f"{n} {row['dtype']} batch {row['batch']} normalization {'on' if row['norm'] else 'off'} "
                    f"({bc.fmt_bytes(gap)})"
                )
    agree = (
        "The dispatch-mode byte sum equals the profiler's (within a few bytes of scalars) on every row"
        if not hidden
        else "The dispatch-mode byte sum equals the profiler's (within a few bytes of scalars) except for: "
        + "; ".join(hidden)
        + ", where kernels allocate internally what a dispatch mode cannot see "
        "(linalg_vector_norm(dtype=float32) upcasting a bf16 input; the profiler total is the one shown)"
    )
    return (
        "## 3. The blend: core `cfg_blend` vs textbook `uncond + (cond - uncond) * cfg`\n\n"
        f"cfg 5, predictions of 16x128x128 per sample ({bc.fmt_bytes(rows[0]['input_bytes'])} per sample in fp32), CPU, "
        f"torch.inference_mode. Time: median per call over {meta['rounds']} interleaved blocks of {meta['calls']} calls (+- as above). "
        'Memory per call: "alloc" = bytes the CPU allocator handed out during one call, from torch.profiler '
        "(profile_memory=True; sum of the positive self CPU memory of every event, kernel-internal allocations included); "
        '"temps" = alloc minus the returned result; "#" = tensors created, counted with a TorchDispatchMode (each aten '
        f"op output with a new storage; views and in-place results are free). {agree}. "
        "Normalization on: core's batched `torch.where` clamp vs the reference pipeline's per-sample loop with a Python "
        "`if` (as diffusers writes it). rel. diff = max |textbook - cfg_blend| / max |textbook| (bf16: the textbook "
        "rounds its intermediates to bf16, lerp does not).\n\n"
        + bc.md_table(
            [
                "dtype",
                "batch",
                "normalization",
                "textbook time",
                "cfg_blend time",
                "time ratio",
                "textbook alloc / temps / #",
                "cfg_blend alloc / temps / #",
                "rel. diff",
            ],
            out,
        )
    )


def render_inspect(rows: list, reps: int) -> str:
    out = []
    for r in rows:
        label = "small file (real data)" if r["name"] == "small" else "full-size sparse file"
        out.append(
            [
                label,
                bc.fmt_bytes(r["size"]),
                bc.fmt_bytes(r["on_disk"]),
                bc.fmt_bytes(r["header"]),
                r["tensors"],
                f"{r['kind']}: {r['config']}, {r['params'] / 1e9:.3g} B params",
                bc.fmt_s(r["first"]),
                f"{bc.fmt_s(r['median'])} ({_pm(r['spread'])})",
                bc.fmt_s(r["median"] / r["tensors"]),
            ]
        )
    return (
        "## 4. `inspect_model` (header only)\n\n"
        f"First call, then median of {reps} alternating calls (file in the page cache: parsing and classification, "
        "not disk). The sparse file has the real Z-Image DiT header (ComfyUI NextDiT at dim 3840, bf16) and is "
        "truncate()d to the size it promises.\n\n"
        + bc.md_table(
            ["file", "size", "on disk", "header", "tensors", "detected", "first call", "median", "median per tensor"],
            out,
        )
    )


def render_gpu(g: dict | None, skipped: str | None) -> str:
    if g is None:
        return f"## 5. GPU: full-size Z-Image\n\n{skipped}"
    s = g["size"]
    dry = g.get("dry_run")
    rows = []
    ref = {}
    for row in g["rows"]:
        if row["path"].startswith("ComfyUI"):
            ref[row["model"]] = row["median"]
    order = {"Turbo": 0, "Base": 1}
    kind = lambda path: 0 if path.startswith("ours") else (1 if path.startswith("ComfyUI") else 2)  # noqa: E731
    for row in sorted(g["rows"], key=lambda r: (order.get(r["model"], 9), kind(r["path"]))):
        base = ref.get(row["model"])
        rows.append(
            [
                row["model"],
                row["path"],
                f"{row['median']:.3f} s",
                _pm(row["spread"]),
                f"{row['median'] / base:.3f}" if base else "-",
                bc.fmt_bytes(row["peak"]) if row["peak"] else "-",
                row["counts"]["desc"],
            ]
        )
    title = "## 5. GPU: full-size Z-Image" + (
        " (DRY RUN on the CPU with a tiny model: checks the code, numbers mean nothing)" if dry else ""
    )
    return (
        f"{title}\n\n"
        f"Device {g['device']}; DiT width {s['dim']}, {s['n_layers']} layer(s), {s['n_refiner_layers']}+{s['n_refiner_layers']} refiners, "
        f"{s['n_heads']} heads of 128, caption width {s['cap_feat_dim']}, random bf16 weights built on the device "
        f"(weights {bc.fmt_bytes(g.get('weights_bytes', 0))}); {g['side']}x{g['side']}; captions {g['captions'][0]} / "
        f"{g['captions'][1]} tokens; Turbo {g['turbo_steps']} steps (shift 3, cfg 1), Base {g['base_steps']} steps "
        f"(shift 6, cfg 5 = diffusers guidance 4). Sampling only (no text encoder, no VAE decode); seconds per image are "
        f"medians of {len(g['rows'][0]['times'])} interleaved rounds after a warm-up; peak = torch.cuda.max_memory_allocated "
        "during the warm-up run, weights included.\n\n"
        + bc.md_table(
            ["model", "path", "s / image", "+-", "ratio vs ComfyUI", "peak GPU memory", "forward calls"], rows
        )
    )


# ---------------------------------------------------------------------------------------------
# Runs


def run_gpu_only(args, p: dict) -> dict:
    """Sections 1-2 (small model) and section 5 (full size) with ComfyUI booted on the GPU.
    With --gpu-dry-run: the same code with ComfyUI on the CPU, a tiny section-5 model and
    smoke-run settings, to check the whole GPU path (child process included) without a GPU."""
    import bench_gpu
    import bench_sampling as bs

    dry = args.gpu_dry_run
    if dry:
        p = QUICK
    host = boot(args, cpu=dry)
    threads = bc.set_threads(args.threads)
    out = {"info": bc.machine(host.version, "cpu (dry run)" if dry else "cuda"), "threads": threads, "dry_run": dry}
    log("GPU child: sections 1-2 with the small model" + (" (dry run on the CPU)" if dry else " on the GPU"))
    small = bs.build_model(host, CPU_MODEL)
    out["small_dtype"] = str(small.model.get_dtype()).replace("torch.", "")
    pos, neg = (
        bs.caption(POS_TOKENS, CPU_MODEL["cap_feat_dim"], 1),
        bs.caption(NEG_TOKENS, CPU_MODEL["cap_feat_dim"], 2),
    )
    latent = bs.empty_latent(p["side"] // 8)
    out["side"] = p["side"]
    rounds_t, rounds_g = (
        (p["turbo_rounds"], p["guided_rounds"]) if dry else (max(p["turbo_rounds"], 7), max(p["guided_rounds"], 5))
    )
    out["turbo"] = bs.turbo(host, small, pos, latent, p["turbo_steps"], rounds_t)
    out["guided"] = bs.guided(host, small, pos, neg, latent, p["guided_steps"], 5.0, rounds_g)
    with bc.StubForward():
        out["turbo_oh"] = bs.turbo(host, small, pos, latent, p["turbo_steps"], p["overhead_rounds"])
        out["guided_oh"] = bs.guided(host, small, pos, neg, latent, p["guided_steps"], 5.0, p["overhead_rounds"])
    del small
    import comfy.model_management as mm

    mm.unload_all_models()
    log("GPU child: section 5, full-size model" + (" (dry run: tiny model on the CPU)" if dry else ""))
    out["gpu"] = bench_gpu.run(host, dry_run=dry, rounds=1 if dry else p["gpu_rounds"])
    out["gpu"]["dry_run"] = dry
    return out


def gpu_child(args) -> tuple[dict | None, str | None]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "gpu.json"
        cmd = [sys.executable, str(BENCH / "run.py"), "--gpu", "--json-out", str(path), "--threads", str(args.threads)]
        if args.quick:
            cmd.append("--quick")
        if args.gpu_dry_run:
            cmd.append("--gpu-dry-run")
        if args.comfyui:
            cmd += ["--comfyui", args.comfyui]
        log(
            "section 5 in a child process (ComfyUI booted "
            + ("on the CPU: dry run)" if args.gpu_dry_run else "on the GPU)")
        )
        tail = collections.deque(maxlen=15)
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:  # progress shows as it happens; the tail explains a failure
                sys.stderr.write("  | " + line)
                tail.append(line.rstrip())
        if proc.returncode != 0 or not path.exists():
            text = "\n".join(tail)
            return None, f"GPU section FAILED (exit {proc.returncode}):\n\n```\n{text}\n```"
        return json.loads(path.read_text()), None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    p = QUICK if args.quick else FULL
    cmd = command_line(argv)
    load_start = os.getloadavg()

    if args.gpu:
        if not torch.cuda.is_available() and not args.gpu_dry_run:
            raise SystemExit(
                "bench --gpu: no CUDA device (torch.cuda.is_available() is False); "
                "--gpu --gpu-dry-run checks the code path on the CPU"
            )
        res = run_gpu_only(args, p)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(res))
            return
        load = f"{load_start[0]:.2f} / {os.getloadavg()[0]:.2f}"
        parts = [
            render_header(res["info"], cmd, {"load": load}, args.quick),
            gpu_small_sections(res),
            render_gpu(res["gpu"], None),
        ]
        return emit("\n\n".join(parts), args, default_write=False)

    import bench_blend
    import bench_inspect
    import bench_sampling as bs

    t_start = time.perf_counter()
    log("booting ComfyUI (cpu=True) and loading the pack through its custom-node loader")
    host = boot(args, cpu=True)
    threads = bc.set_threads(args.threads)
    from zimage_nodes.core.guidance import cfg_blend
    from zimage_nodes.core.model_inspection import inspect_model

    model = bs.build_model(host, CPU_MODEL)
    dtype = str(model.model.get_dtype()).replace("torch.", "")
    pos, neg = (
        bs.caption(POS_TOKENS, CPU_MODEL["cap_feat_dim"], 1),
        bs.caption(NEG_TOKENS, CPU_MODEL["cap_feat_dim"], 2),
    )
    latent = bs.empty_latent(p["side"] // 8)

    log(f"1. Turbo ({p['turbo_steps']} steps, {p['turbo_rounds']} rounds)")
    turbo = bs.turbo(host, model, pos, latent, p["turbo_steps"], p["turbo_rounds"])
    log(f"2. Guided ({p['guided_steps']} steps, cfg 5, {p['guided_rounds']} rounds)")
    guided = bs.guided(host, model, pos, neg, latent, p["guided_steps"], 5.0, p["guided_rounds"])
    log(f"1-2. Overhead with NextDiT.forward stubbed out ({p['overhead_rounds']} rounds)")
    with bc.StubForward():
        turbo_oh = bs.turbo(host, model, pos, latent, p["turbo_steps"], p["overhead_rounds"])
        guided_oh = bs.guided(host, model, pos, neg, latent, p["guided_steps"], 5.0, p["overhead_rounds"])
    log("3. Blend")
    blend_rows = bench_blend.run(cfg_blend, rounds=p["blend_rounds"], calls=p["blend_calls"])
    log("4. inspect_model")
    with tempfile.TemporaryDirectory(prefix="zimage_bench_") as d:
        inspect_rows = bench_inspect.run(inspect_model, Path(d), reps=p["inspect_reps"])

    gpu, skipped, gpu_res = None, None, None
    if args.no_gpu:
        skipped = "Skipped: --no-gpu given."
    elif not torch.cuda.is_available() and not args.gpu_dry_run:
        skipped = (
            "Skipped: no GPU is present (torch.cuda.is_available() is False). On a CUDA machine the same command "
            "runs it (or `python tools/bench/run.py --gpu` for this section alone)."
        )
    else:
        gpu_res, skipped = gpu_child(args)
        gpu = gpu_res["gpu"] if gpu_res else None
        if gpu_res is None:
            log(skipped)

    load = f"{load_start[0]:.2f} / {os.getloadavg()[0]:.2f}"
    settings = {"model": CPU_MODEL, "side": p["side"], "dtype": dtype, "load": load, "threads": threads}
    info = bc.machine(host.version)
    parts = [
        render_header(info, cmd, settings, args.quick),
        render_summary(turbo, guided, blend_rows, inspect_rows, gpu, turbo_oh, guided_oh),
        render_cpu_setup(settings),
        render_turbo(turbo) + "\n\n" + render_overhead(turbo_oh, "official"),
        render_guided(guided) + "\n\n" + render_overhead(guided_oh, "comfy"),
        render_blend(blend_rows, {"rounds": p["blend_rounds"], "calls": p["blend_calls"]}),
        render_inspect(inspect_rows, p["inspect_reps"]),
    ]
    if gpu_res is not None:
        parts.append(gpu_small_sections(gpu_res))
    parts.append(render_gpu(gpu, skipped))
    parts.append(f"Total benchmark time: {time.perf_counter() - t_start:.0f} s.")
    emit("\n\n".join(parts), args, default_write=not args.quick and not args.gpu_dry_run)


def gpu_small_sections(res: dict) -> str:
    where = "DRY RUN: CPU" if res.get("dry_run") else "GPU"
    suffix = f" ({where}, small model, {res.get('small_dtype', '?')}, {res['side']}x{res['side']})"
    return (
        render_turbo(res["turbo"], suffix)
        + "\n\n"
        + render_overhead(res["turbo_oh"], "official")
        + "\n\n"
        + render_guided(res["guided"], suffix)
        + "\n\n"
        + render_overhead(res["guided_oh"], "comfy")
    )


def emit(text: str, args, default_write: bool):
    print(text)
    target = args.results or (str(BENCH / "RESULTS.md") if default_write else None)
    if target:
        Path(target).write_text(text + "\n")
        log(f"report written to {target}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Pipelines benchmark: images per minute of the runner (tools/run_workflow.py) with 1 and 2 local
ComfyUI servers, and its overhead per item over a bare /prompt + /history loop, measured side by
side in one run (modes interleaved round by round, the order rotated each round; medians).

    python tools/bench/bench_pipeline.py [--comfyui PATH] [--items 8] [--rounds 3] [--side 128] [--steps 4]

Demo weights (tiny random Z-Image files) on the CPU; the Turbo example workflow at a small size.
Each mode gets fresh seeds every round, so ComfyUI's cache never skips the sampler. Modes:
  bare       one server; POST /prompt, poll /history every 100 ms until done; no images fetched
             (polling much faster steals the server's CPU on a small machine and slows it down)
  runner K=1 one server, --max-in-flight 1: the same one-at-a-time flow, plus /view, sha256, files
             and the manifest (its per-item overhead over `bare` is the runner's cost)
  runner K=2 one server, two prompts queued: the next prompt waits in the server's queue
  2 servers  two servers, K=2 each
Job time is the runner's own (its summary), without its start-up (object_info, checks), which is
reported apart. Nothing here asserts: it measures and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]
RUNNER = PACK_DIR / "tools" / "run_workflow.py"
WORKFLOW = PACK_DIR / "example_workflows" / "z_image_turbo_text_to_image.json"


def load_runner():
    if str(PACK_DIR / "tools" / "site") not in sys.path:
        sys.path.append(str(PACK_DIR / "tools" / "site"))
    from zimage_nodes.tools import run_workflow

    run_workflow._keep_pack_root_off_sys_path()
    return run_workflow


def log(msg: str):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def post(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=30) as resp:
        return json.loads(resp.read())


def bare_loop(url: str, prompts: list[dict], timeout: float = 600) -> float:
    """The least a client can do: queue one prompt, poll its history until it is there, next."""
    started = time.perf_counter()
    for prompt in prompts:
        prompt_id = post(url, "/prompt", {"prompt": prompt})["prompt_id"]
        deadline = time.monotonic() + timeout
        while True:
            entry = get(url, f"/history/{prompt_id}").get(prompt_id)
            if entry and (entry.get("status") or {}).get("completed"):
                break
            if entry and (entry.get("status") or {}).get("status_str") == "error":
                raise RuntimeError(f"bare loop: prompt failed: {entry['status']}")
            if time.monotonic() > deadline:
                raise TimeoutError("bare loop: prompt did not finish")
            time.sleep(0.1)
    return time.perf_counter() - started


def run_runner(urls: list[str], sets: list[str], items: int, k: int, out: Path) -> tuple[float, float]:
    """(job seconds from the runner's summary, whole process seconds)."""
    cmd = [sys.executable, str(RUNNER), str(WORKFLOW), "--demo-weights", "--count", str(items)]
    cmd += [a for u in urls for a in ("--server", u)]
    cmd += [a for s in sets for a in ("--set", s)]
    cmd += ["--max-in-flight", str(k), "--output", str(out), "--no-progress"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"runner failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    seconds = float(re.search(r"^\s*seconds\s+([\d.]+)", proc.stdout, re.M).group(1))
    return seconds, wall


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH, the one the pack sits in, ../ComfyUI)")
    p.add_argument("--items", type=int, default=8, help="images per measurement (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--side", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--steps", type=int, default=4, help="sampler steps (default 4)")
    args = p.parse_args(argv)

    runner = load_runner()
    headless, wc, pl, cs = runner.load_tools()
    comfyui, how = headless.find_comfyui(args.comfyui)
    if comfyui is None:
        print(f"error: {how}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="zinodes_bench_pipeline_"))
    servers = []
    try:
        log("writing demo weights")
        demo = runner.start_demo_weights(comfyui, tmp / "models")
        try:
            runner.finish_demo_weights(demo)
        finally:
            if demo is not None and demo.poll() is None:
                demo.kill()
                demo.communicate()
        folders = {kind: [tmp / "models" / kind] for kind in runner.DEMO_KINDS}
        for i in (1, 2):
            log(f"starting server {i}")
            server = cs.ComfyServer(comfyui, model_folders=folders, cpu=True, log_path=tmp / f"server{i}.log")
            servers.append(server.start(timeout=300))
        urls = [s.url for s in servers]
        version = cs.ComfyClient(urls[0]).system_stats().get("system", {}).get("comfyui_version", "?")

        definitions = pl.ObjectInfoDefinitions(cs.ComfyClient(urls[0]).object_info())
        base = wc.load_prompt(json.loads(WORKFLOW.read_text()), definitions)
        sizes = [
            f"EmptySD3LatentImage.width={args.side}",
            f"EmptySD3LatentImage.height={args.side}",
            f"Z-Image Turbo Sampler.steps={args.steps}",
        ]
        wc.apply_overrides(base, [wc.parse_override(s) for s in sizes], definitions)
        wc.use_demo_models(base, runner.demo_names())

        # Warm both servers (model load) so no mode pays for it.
        for url in urls:
            bare_loop(url, [wc.with_seed_offset(base, 10_000 + len(url))])

        seed = [1000]

        def fresh(n):
            seed[0] += 1000
            return seed[0], [wc.with_seed_offset(base, seed[0] + i) for i in range(n)]

        results: dict[str, list[float]] = {m: [] for m in ("bare", "runner K=1", "runner K=2", "2 servers K=2")}
        startup: list[float] = []
        for r in range(args.rounds):
            log(f"round {r + 1}/{args.rounds}")
            modes = [("bare", urls[:1], 1), ("runner K=1", urls[:1], 1), ("runner K=2", urls[:1], 2)]
            modes.append(("2 servers K=2", urls, 2))
            for mode, use, k in modes[r % 4 :] + modes[: r % 4]:
                first, prompts = fresh(args.items)
                if mode == "bare":
                    results[mode].append(bare_loop(use[0], prompts))
                    continue
                sets = sizes + [f"Z-Image Turbo Sampler.seed={first}"]
                seconds, wall = run_runner(use, sets, args.items, k, tmp / f"out{r}{mode.replace(' ', '')}")
                results[mode].append(seconds)
                startup.append(wall - seconds)

        med = {m: statistics.median(v) for m, v in results.items()}
        n = args.items
        bare = med["bare"]
        print(
            f"\nPipelines, ComfyUI {version} ({how}), CPU, demo weights, Turbo workflow at {args.side}x{args.side}, "
            f"{args.steps} steps; {n} images per measurement, {args.rounds} interleaved rounds, medians; "
            f"{os.cpu_count()} CPU cores shared with the servers.\n"
        )
        print(
            "| mode | servers | in flight / server | s per image | images / minute | runner overhead per image vs bare |"
        )
        print("|---|---|---|---|---|---|")
        for mode, servers_used, k in (
            ("bare", 1, 1),
            ("runner K=1", 1, 1),
            ("runner K=2", 1, 2),
            ("2 servers K=2", 2, 2),
        ):
            per = med[mode] / n
            over = "-" if mode == "bare" else f"{(med[mode] - bare) / n * 1000:+.0f} ms"
            label = "bare /prompt + /history loop" if mode == "bare" else f"run_workflow.py ({mode})"
            print(f"| {label} | {servers_used} | {k} | {per:.2f} | {60 / per:.1f} | {over} |")
        print(
            f"\nrunner start-up per job (object_info, conversion, server checks; not in the job time): "
            f"median {statistics.median(startup):.1f} s"
        )
        print(f"2 servers / 1 server (K=2), images per minute: {med['runner K=2'] / med['2 servers K=2']:.2f}x")
        return 0
    finally:
        for server in servers:
            server.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

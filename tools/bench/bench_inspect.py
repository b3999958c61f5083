"""Section 4: `inspect_model` on a small real file and on a full-size sparse one.

The small file is a random-weight Z-Image DiT with real data (about 10 MB). The large one has
the full Z-Image DiT's header (dim 3840, 30 layers, 2+2 refiners, bf16; key names and shapes
taken from ComfyUI's own NextDiT built on the meta device) and is then extended with truncate()
to the size the header promises, so it is sparse: gigabytes long, a few kilobytes on disk.
Times are medians over repeated calls with the file in the page cache (both files were just
written), i.e. the cost of parsing and classifying, not of a cold disk.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import bench_common as bc
import torch

SMALL = dict(dim=384, n_layers=1, n_refiner_layers=1, n_heads=3, cap_feat_dim=64)  # ~11 MB in bf16


def full_size_shapes() -> dict:
    from zimage_nodes.tools import demo_weights

    return demo_weights.dit_shapes(**demo_weights.FULL)


def write_sparse(path: Path, shapes: dict, metadata: dict) -> int:
    from zimage_nodes.tools import demo_weights

    return demo_weights.save_header_only(path, shapes, "BF16", metadata)


def write_small(path: Path) -> int:
    from zimage_nodes.tools import demo_weights

    sd = {k: v.to(torch.bfloat16) for k, v in demo_weights.dit_state_dict(3, **SMALL).items()}
    demo_weights.save(path, sd, {"modelspec.title": "Z-Image benchmark file"})
    return path.stat().st_size


def run(inspect_model, workdir: Path, reps: int = 30) -> list[dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    small, big = workdir / "zimage_small.safetensors", workdir / "zimage_full_sparse.safetensors"
    write_small(small)
    write_sparse(big, full_size_shapes(), {"modelspec.title": "Z-Image full-size sparse benchmark file"})
    files = {"small": small, "sparse": big}
    first = {}
    for n, p in files.items():
        t0 = time.perf_counter()
        info = inspect_model(p)
        first[n] = (time.perf_counter() - t0, info)
    times = {n: [] for n in files}
    for r in range(reps):
        for n in list(files) if r % 2 == 0 else list(files)[::-1]:
            t0 = time.perf_counter()
            inspect_model(files[n])
            times[n].append(time.perf_counter() - t0)
    rows = []
    for n, p in files.items():
        st = os.stat(p)
        with open(p, "rb") as f:
            header_bytes = struct.unpack("<Q", f.read(8))[0]
        info = first[n][1]
        cfg = info.config
        rows.append(
            {
                "name": n,
                "size": st.st_size,
                "on_disk": st.st_blocks * 512,
                "header": header_bytes,
                "tensors": len(info.tensors),
                "kind": info.kind,
                "config": f"dim {cfg.dim}, {cfg.n_layers} layer(s), {cfg.n_refiner_layers}+{cfg.n_refiner_layers} refiners"
                if cfg
                else "-",
                "params": info.params,
                "first": first[n][0],
                "median": bc.median(times[n]),
                "spread": bc.spread(times[n]),
            }
        )
    for p in files.values():
        p.unlink()
    return rows

#!/usr/bin/env python
"""Run a ComfyUI workflow headless, with Z-Image Nodes loaded: no browser, no server.

    python tools/run_workflow.py WORKFLOW.json [--comfyui PATH] [--set NODE.input=value ...]
        [--count N] [--output DIR] [--demo-weights] [--validate-only] [--cpu]

Run it with the Python of your ComfyUI environment. WORKFLOW.json is a workflow saved from the
editor (UI format, e.g. example_workflows/*.json) or an API-format prompt ("Export (API)").
UI workflows are converted with the node definitions of the booted ComfyUI, as the editor does
when you press Run.

ComfyUI is found as: --comfyui PATH, else $COMFYUI_PATH, else the ComfyUI this pack is installed in
(ComfyUI/custom_nodes/<pack>), else a ComfyUI folder beside the pack.

--set NODE.input=value   NODE is a node id, a title ("Positive") or a class type (EmptySD3LatentImage);
                         the value is read as JSON when it parses (5, 2.5, true) and as text otherwise.
                         A value replaces a link (e.g. --set "Z-Image Turbo Sampler.steps=4").
--count N                N images, every seed / noise_seed advanced by one per image.
--demo-weights           Stand tiny random-weight Z-Image files in for every Z-Image Loader's files:
                         checks that the graph runs end to end without the real 20 GB of weights.
                         The images are noise.
--validate-only          Convert and validate (ComfyUI's own validation), do not execute.

Exit status: 0 done; 1 the workflow failed (conversion, validation or execution; the message names
the node id and type); 2 usage or setup problem (file, ComfyUI not found, bad --set).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
PACKAGE = "zimage_nodes"


_spec = importlib.util.spec_from_file_location("zimage_pack_loader", Path(__file__).resolve().parent / "pack_loader.py")
pack_loader = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pack_loader)


def _keep_pack_root_off_sys_path():
    pack_loader.keep_pack_root_off_sys_path(Path(__file__).resolve().parent)


def load_pack():
    """The pack as package `zimage_nodes` (tools/pack_loader.py), and the tool modules used here."""
    pack_loader.load_pack(PACKAGE)
    return pack_loader.load_tool("headless", PACKAGE), pack_loader.load_tool("workflow_convert", PACKAGE)


class UsageError(Exception):
    """Bad arguments or setup: exit status 2."""


# -- progress ------------------------------------------------------------------------------------


class Progress:
    """One tqdm bar per image, fed by ComfyUI's progress hook (sampler steps of every node that
    reports progress; the bar's total grows as nodes start)."""

    def __init__(self, prompt: dict, enabled: bool = True):
        self.titles = {k: (v.get("_meta") or {}).get("title") or v["class_type"] for k, v in prompt.items()}
        self.enabled = enabled
        self.bar = None
        self.seen: dict = {}
        self.running = None

    def start(self, index: int, count: int):
        if not self.enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:  # ComfyUI requires tqdm; degrade to plain lines anyway
            self.enabled = False
            return
        self.seen = {}
        self.running = None
        self.bar = tqdm(
            total=0, desc=f"image {index}/{count}", unit="step", leave=True, dynamic_ncols=True, file=sys.stderr
        )

    def on_event(self, event: str, data):
        if self.bar is None or not isinstance(data, dict):
            return
        if event == "progress_state":
            # Which node runs now (ComfyUI sends "executing" only to a connected client).
            running = [
                k for k, s in (data.get("nodes") or {}).items() if isinstance(s, dict) and s.get("state") == "running"
            ]
            if running and running[-1] != self.running:
                self.running = running[-1]
                self.bar.set_postfix_str(str(self.titles.get(str(self.running), self.running)), refresh=True)
        elif event == "progress":
            node = str(data.get("node"))
            value, total = int(data.get("value") or 0), int(data.get("max") or 0)
            if node not in self.seen:
                self.seen[node] = 0
                self.bar.total += total
                self.bar.refresh()
            step = value - self.seen[node]
            if step > 0:
                self.seen[node] = value
                self.bar.update(step)

    def finish(self):
        if self.bar is not None:
            self.bar.set_postfix_str("done", refresh=True)
            self.bar.close()
            self.bar = None


def install_progress_hook(host):
    """What ComfyUI's main.py does for its web UI: turn comfy.utils.ProgressBar updates into
    'progress' events on the (headless) server. Returns a function that undoes it."""
    import comfy.utils
    from comfy_execution.progress import get_progress_state
    from comfy_execution.utils import get_executing_context

    before = (comfy.utils.PROGRESS_BAR_ENABLED, comfy.utils.PROGRESS_BAR_HOOK)

    def hook(value, total, preview_image, prompt_id=None, node_id=None):
        context = get_executing_context()
        if node_id is None and context is not None:
            node_id = context.node_id
        if prompt_id is None and context is not None:
            prompt_id = context.prompt_id
        get_progress_state().update_progress(node_id, value, total, None)
        host.server.send_sync("progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id})

    comfy.utils.set_progress_bar_global_hook(hook)
    comfy.utils.set_progress_bar_enabled(False)  # our bar replaces the samplers' own tqdm

    def undo():
        comfy.utils.set_progress_bar_enabled(before[0])
        comfy.utils.set_progress_bar_global_hook(before[1])

    return undo


# -- steps ---------------------------------------------------------------------------------------


def read_workflow(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"workflow file not found: {path}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not valid JSON: {e}") from None


def has_accelerator() -> bool:
    try:
        import torch
    except ImportError:
        return False
    if torch.cuda.is_available():
        return True
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


def boot(headless, comfyui: str | None, cpu: bool, output: str | None, verbose: bool):
    path, how = headless.find_comfyui(comfyui)
    if path is None:
        raise UsageError(
            f"{how}.\nPass --comfyui PATH, set COMFYUI_PATH, install this pack in ComfyUI/custom_nodes/, "
            "or put ComfyUI beside the pack."
        )
    if output:
        Path(output).mkdir(parents=True, exist_ok=True)
        output = str(Path(output).resolve())
    if not verbose:
        # ComfyUI warns about optional extras it cannot import (audio nodes and the like) at boot.
        logging.disable(logging.WARNING)
    try:
        host = headless.boot(path, cpu=cpu, output_dir=output, verbose=verbose)
    finally:
        logging.disable(logging.NOTSET)
    if output:  # also when the host was already booted in this process
        host.folder_paths.set_output_directory(output)
    if not host.pack_loaded:
        raise UsageError("ComfyUI's custom node loader failed to import Z-Image Nodes (run with --verbose to see why)")
    print(f"ComfyUI {host.version} at {path} ({how}); device: {'CPU' if cpu else 'accelerator'}")
    return host


def prepare_prompt(host, convert, data: dict, overrides, warnings: list | None = None) -> dict:
    """API prompt from a UI or API workflow, with --set overrides applied."""
    definitions = convert.HostDefinitions(host.nodes)
    prompt = convert.load_prompt(data, definitions, warnings)
    try:
        lines = convert.apply_overrides(prompt, overrides, definitions)
    except convert.ConversionError as e:
        raise UsageError(str(e)) from None
    for line in lines:
        print(f"set {line}")
    return prompt


def validate(host, convert, prompt: dict, data: dict, verbose: bool):
    """ComfyUI's own validation; its log lines are left out (the error names the node instead)."""
    if not verbose:
        logging.disable(logging.ERROR)
    try:
        return host.validate(prompt)
    except Exception as err:
        missing = "Value not in list" in str(err) or "not in list" in str(getattr(err, "details", ""))
        if missing and convert.is_ui_workflow(data):
            models = [m for n in data["nodes"] for m in (n.get("properties") or {}).get("models") or []]
            if models:
                err.hint = (
                    "model files this workflow names (put them in ComfyUI/models/<directory>/), "
                    "or try --demo-weights:\n"
                    + "\n".join(f"  {m.get('directory')}/{m.get('name')}  {m.get('url')}" for m in models)
                )
        raise
    finally:
        logging.disable(logging.NOTSET)


def setup_demo_weights(host, convert, prompt: dict, data: dict, demo_dir: str | None, validate_only: bool):
    """Write and register the demo files, point the Z-Image Loaders at them. Other loaders' files
    cannot be stood in for: an error, or empty placeholders when only validating."""
    demo_weights = importlib.import_module(PACKAGE + ".tools.demo_weights")
    others = convert.model_file_inputs(prompt, data)
    if others and not validate_only:
        lines = "\n".join(f"  node {o['node_id']} ({o['class_type']}).{o['input']} = {o['name']!r}" for o in others)
        raise convert.ConversionError(
            "--demo-weights only stands in for the files of Z-Image Loader nodes; this workflow also loads:\n"
            f"{lines}\nRun it with the real model files, or add --validate-only to check the graph without running it.",
            others[0]["node_id"],
            others[0]["class_type"],
        )
    root = Path(demo_dir) if demo_dir else Path(tempfile.mkdtemp(prefix="zimage_demo_models_"))
    names = demo_weights.write_demo_models(root)
    for kind in ("diffusion_models", "text_encoders", "vae"):
        host.add_model_folder(kind, root / kind)
    for line in convert.use_demo_models(prompt, names):
        print(line)
    for o in others:
        if not o["directory"]:
            raise convert.ConversionError(
                f"cannot tell which models folder '{o['name']}' belongs in, so no placeholder can stand in for it",
                o["node_id"],
                o["class_type"],
            )
        placeholder = root / "placeholders" / o["directory"] / o["name"]
        placeholder.parent.mkdir(parents=True, exist_ok=True)
        placeholder.touch()
        host.add_model_folder(o["directory"], placeholder.parent)
        print(
            f"node {o['node_id']} ({o['class_type']}): empty placeholder for {o['directory']}/{o['name']} "
            "(validation only: it is never loaded)"
        )
    if not any(e.get("class_type") == convert.ZIMAGE_LOADER for e in prompt.values()) and not others:
        print("note: no Z-Image Loader in this workflow; --demo-weights changes nothing")
    print(
        "DEMO WEIGHTS: tiny random-weight Z-Image files stand in for the real ones. Images made with them are "
        "noise; this only shows that every node of the graph runs."
    )
    return root, names


def print_workflow_error(err, verbose: bool):
    print(f"error: {err}", file=sys.stderr)
    details = getattr(err, "details", None)
    if isinstance(details, dict):
        # validation: every failing node; execution: the traceback (with --verbose)
        for node_id, info in details.items():
            if isinstance(info, dict) and "errors" in info and str(node_id) != str(getattr(err, "node_id", None)):
                msgs = "; ".join(f"{e.get('message')}: {e.get('details')}" for e in info["errors"])
                print(f"error: node {node_id} ({info.get('class_type')}): {msgs}", file=sys.stderr)
        if verbose and details.get("traceback"):
            print("".join(details["traceback"]), file=sys.stderr)
    if getattr(err, "hint", None):
        print(err.hint, file=sys.stderr)


def run_images(host, convert, prompt: dict, count: int, progress_enabled: bool = True) -> list[Path]:
    """Execute the prompt count times (seeds +1 each time); returns the files written."""
    written: list[Path] = []
    seeds = convert.seed_inputs(prompt)
    progress = Progress(prompt, enabled=progress_enabled)
    undo = install_progress_hook(host)
    output_dir = Path(host.folder_paths.get_output_directory())
    try:
        for i in range(count):
            p = convert.with_seed_offset(prompt, i)
            seed_text = ", ".join(f"{k}.{n}={p[k]['inputs'][n]}" for k, n in seeds) or "no seed inputs"
            print(f"image {i + 1}/{count}: {seed_text}")
            progress.start(i + 1, count)
            started = time.perf_counter()
            try:
                result = host.run(p, on_event=progress.on_event)
            finally:
                progress.finish()
            files = convert.saved_files(result.outputs)
            for f in files:
                if f["type"] == "output":
                    path = output_dir / f["subfolder"] / f["filename"]
                    written.append(path)
                    print(f"  wrote {path}")
            if i == 0:
                for node_id, ui in result.outputs.items():
                    for text in ui.get("text") or []:
                        if isinstance(text, str) and text.strip():
                            title = (p[node_id].get("_meta") or {}).get("title", p[node_id]["class_type"])
                            print(f"  [{node_id} {title}] {text.strip()}")
            print(f"  {time.perf_counter() - started:.1f} s")
    finally:
        undo()
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_workflow.py",
        description="Run a ComfyUI workflow (editor or API format) headless, with Z-Image Nodes loaded.",
        epilog="ComfyUI is found as: --comfyui, $COMFYUI_PATH, the ComfyUI this pack is installed in, "
        "or ../ComfyUI beside the pack. Exit status: 0 done, 1 workflow failed, 2 usage/setup.",
    )
    parser.add_argument("workflow", help="workflow JSON: saved from the editor, or an API-format export")
    parser.add_argument("--comfyui", metavar="PATH", help="ComfyUI checkout (see the discovery rules below)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.input=value",
        help="set an input; NODE is an id, title or type; value as JSON if it parses (repeatable)",
    )
    parser.add_argument("--count", type=int, default=1, metavar="N", help="images to make, seeds +1 each (default 1)")
    parser.add_argument("--output", metavar="DIR", help="ComfyUI output directory (default: ComfyUI's own)")
    parser.add_argument(
        "--demo-weights",
        action="store_true",
        help="tiny random-weight Z-Image files instead of the real ones (images are noise)",
    )
    parser.add_argument(
        "--demo-dir", metavar="DIR", help="where --demo-weights writes (and reuses) its files; default: a temp folder"
    )
    parser.add_argument("--validate-only", action="store_true", help="convert and validate, do not execute")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is available")
    parser.add_argument("--save-api", metavar="FILE", help="also write the API-format prompt that is run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="ComfyUI's log and tracebacks")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _keep_pack_root_off_sys_path()
    headless, convert = load_pack()
    temp_demo = None
    try:
        if args.count < 1:
            raise UsageError("--count must be at least 1")
        data = read_workflow(args.workflow)
        try:
            overrides = [convert.parse_override(text) for text in args.overrides]
        except ValueError as e:
            raise UsageError(str(e)) from None
        cpu = args.cpu or not has_accelerator()
        host = boot(headless, args.comfyui, cpu, args.output, args.verbose)

        warnings: list[str] = []
        prompt = prepare_prompt(host, convert, data, overrides, warnings)
        for w in warnings:
            print(f"warning: {w}")
        if args.demo_weights:
            root, _ = setup_demo_weights(host, convert, prompt, data, args.demo_dir, args.validate_only)
            temp_demo = None if args.demo_dir else root
        if args.save_api:
            Path(args.save_api).write_text(json.dumps(prompt, indent=2) + "\n")
            print(f"API prompt written to {args.save_api}")

        outputs = validate(host, convert, prompt, data, args.verbose)
        if args.validate_only:
            print(f"valid: {len(prompt)} nodes, output nodes {', '.join(map(str, outputs))}")
            return 0

        started = time.perf_counter()
        written = run_images(host, convert, prompt, args.count, progress_enabled=not args.no_progress)
        print(f"\n{len(written)} file(s) written in {time.perf_counter() - started:.1f} s:")
        for path in written:
            print(f"  {path}")
        if args.demo_weights:
            print("(demo weights: these images are noise)")
        return 0
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (headless.WorkflowError, convert.ConversionError) as e:
        print_workflow_error(e, args.verbose)
        return 1
    finally:
        if temp_demo is not None:
            import shutil

            shutil.rmtree(temp_demo, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Run a ComfyUI workflow without the browser, through ComfyUI's own server API; one image or a
whole job of prompts x seeds, on an embedded server or on running ones.

    python tools/run_workflow.py WORKFLOW.json [--set NODE.input=value ...] [--count N]
        [--prompts FILE] [--server URL ...] [--output DIR] [--resume] [--demo-weights]
        [--validate-only] [--cpu]

WORKFLOW.json is a workflow saved from the editor (UI format, e.g. example_workflows/*.json) or an
API-format prompt ("Export (API)"). UI workflows are converted with the node definitions the server
sends (/object_info), as the editor does when you press Run.

Targets. By default (embedded) the runner starts the ComfyUI it finds as a server on a free
loopback port, with this pack loaded, queues the work there and stops it at the end; run it with
the Python of that ComfyUI's environment. ComfyUI is found as: --comfyui PATH, else $COMFYUI_PATH,
else the ComfyUI this pack is installed in, else a ComfyUI folder beside the pack. `--server URL`
(repeatable) sends the work to running ComfyUI servers instead; each is checked first (reachable,
Z-Image Nodes loaded, every node type and model file of the workflow present) and refused with the
reason if not.

Jobs. --prompts FILE: .txt, one prompt per line (sets the positive prompt's text); .csv (header row)
or .jsonl: one row per line, a column per --set target (`Positive.text`, `EmptySD3LatentImage.width`,
`5.steps`) and `seed` (every seed input). --count N: N seeds per row (+1 each). Each row x seed is one
queued prompt; they are spread over the servers, at most --max-in-flight per server. A server that
stops answering is named and hands its items to the others; a failed item never stops the others.
--timeout counts from when an item starts running on its server, not while it waits in a queue;
--queue-timeout stops the job when none of its items has moved for that long.

Outputs. Images are fetched through the server's /view into --output (row and seed in the name);
manifest.jsonl there records each item (overrides, seed, server, files with sha256, seconds, error
with the node). --resume skips the items the manifest records as done.

Every failure ends in one line naming the file, server, row or node and what to do. The output
folder, manifest and --save-api file are checked before any server is started or asked. Ctrl-C (or
a second one, at once) leaves a manifest line for every item of the job.

Exit status: 0 all done; 1 an item or the workflow failed (the message names the node id and type),
or the job stopped early (manifest not writable, watchdog); 2 usage or setup problem (file, empty
prompts file, ComfyUI not found, bad --set, no usable server); 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
PACKAGE = "zimage_nodes"
DEMO_KINDS = ("diffusion_models", "text_encoders", "vae", "loras")


SITE = PACK_DIR / "tools" / "site"  # `import zimage_nodes` (the pack) from here


def _keep_pack_root_off_sys_path():
    """Drop the pack root and tools/ (Python puts a script's own folder first) from sys.path, so that
    `import nodes` finds ComfyUI's module, and put tools/site on it for `import zimage_nodes`."""
    bad = {PACK_DIR.resolve(), (PACK_DIR / "tools").resolve()}
    keep = []
    for entry in sys.path:
        try:
            resolved = Path(entry or os.getcwd()).resolve()
        except OSError:
            resolved = None
        if resolved not in bad:
            keep.append(entry)
    if str(SITE) not in keep:
        keep.append(str(SITE))
    sys.path[:] = keep


def load_tools():
    """The tool modules the runner uses, from the pack imported as `zimage_nodes` (it imports no ComfyUI)."""
    return [
        importlib.import_module(f"{PACKAGE}.tools.{name}")
        for name in ("headless", "workflow_convert", "pipeline", "comfy_server")
    ]


class UsageError(Exception):
    """Bad arguments or setup: exit status 2."""


def read_workflow(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"workflow file not found: {path}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the workflow file {path} ({e}); give a readable JSON file") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise UsageError(f"{path} is not valid JSON: {e}") from None


# -- paths the job writes, checked before any work -------------------------------------------------


def _under_a_file(path: Path) -> Path | None:
    """The first existing ancestor of path when it is not a folder (path can never be made)."""
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            return None if parent.is_dir() else parent
    return None


def check_folder(path: Path, option: str) -> None:
    """Make the folder if needed and prove that a file can be written in it (permissions alone say
    nothing for root or a read-only mount); UsageError naming it and what to do otherwise."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder; give {option} a folder")
    blocker = _under_a_file(path)
    if blocker is not None:
        raise UsageError(f"{option} {path} is under {blocker}, which is a file; give {option} a folder path")
    try:
        _write_probe(path)
    except OSError as e:
        raise UsageError(
            f"{option} {path} cannot be written ({e.strerror or e}); give {option} a folder you can write to"
        ) from None


def _write_probe(folder: Path) -> None:
    """Make the folder if needed and create and delete a file in it: OSError if that fails."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".zinodes-write-check-", dir=folder)
    os.close(fd)
    os.unlink(probe)


def check_file(path: Path, option: str) -> None:
    """Prove that the file can be written (appended to when it exists, without changing it)."""
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give {option} a file path")
    blocker = _under_a_file(path)
    if blocker is not None:
        raise UsageError(f"{option} {path} is under {blocker}, which is a file; give {option} a file path")
    try:
        if path.exists():
            with open(path, "ab"):
                pass
        else:
            _write_probe(path.parent)
    except OSError as e:
        raise UsageError(
            f"{option} {path} cannot be written ({e.strerror or e}); give {option} a file you can write"
        ) from None


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


# -- demo weights --------------------------------------------------------------------------------

# Runs in a child process of the host's Python: the demo files are built with ComfyUI's own model
# classes, which must not be imported into the runner (it only talks to servers).
_DEMO_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import comfy.options  # noqa: F401  (keeps ComfyUI from parsing our argv)
from comfy.cli_args import args
args.cpu = True  # the files are built on the CPU, whatever the machine has
sys.path.append(sys.argv[2])
from zimage_nodes.tools import demo_weights
demo_weights.write_demo_models(sys.argv[3])
"""


def start_demo_weights(comfyui: Path, root: Path, python: str = sys.executable) -> subprocess.Popen | None:
    """Start writing the demo files under root (reused when already there); None when nothing to do."""
    names = demo_names()
    if all((root / kind / names[role]).is_file() for role, kind in demo_roles()):
        return None
    for kind in DEMO_KINDS:
        (root / kind).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [python, "-c", _DEMO_SCRIPT, str(comfyui), str(SITE), str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def demo_names() -> dict:
    # The file names only; demo_weights imports torch at module level, so they are read from its source.
    import ast

    tree = ast.parse((PACK_DIR / "tools" / "demo_weights.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NAMES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("tools/demo_weights.py has no NAMES table")


def demo_roles():
    return [
        ("turbo", "diffusion_models"),
        ("base", "diffusion_models"),
        ("text_encoder", "text_encoders"),
        ("vae", "vae"),
        ("lora", "loras"),
    ]


def finish_demo_weights(proc: subprocess.Popen | None, timeout: float = 300):
    if proc is None:
        return
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise UsageError(f"writing the demo weights took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise UsageError("writing the demo weights failed:\n" + "\n".join((out or "").splitlines()[-15:]))


# -- progress ------------------------------------------------------------------------------------


class Progress:
    """One bar over the job's items, and one step bar per server fed by its `progress` events.
    Without tqdm or with --no-progress: plain lines only."""

    def __init__(self, total: int, urls: list[str], enabled: bool = True):
        self.lock = threading.Lock()
        self.enabled = enabled
        self.bars = {}
        self.overall = None
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self.enabled = False
            return
        self.tqdm = tqdm
        self.overall = tqdm(total=total, desc="items", unit="item", position=0, dynamic_ncols=True, file=sys.stderr)
        for i, url in enumerate(urls, start=1):
            self.bars[url] = tqdm(
                total=0, desc=url, unit="step", position=i, leave=False, dynamic_ncols=True, file=sys.stderr
            )
        self.seen: dict = {}

    def write(self, line: str, err: bool = False):
        stream = sys.stderr if err else sys.stdout
        with self.lock:
            if self.enabled:
                self.tqdm.write(line, file=stream)
            else:
                print(line, file=stream, flush=True)

    def start_item(self, url: str, item):
        if not self.enabled:
            return
        with self.lock:
            bar = self.bars.get(url)
            if bar is not None:
                self.seen[url] = {}
                bar.reset(total=0)
                bar.set_description_str(f"{url} {item.name}")

    def on_event(self, url: str, event: str, data):
        if not self.enabled or event != "progress" or not isinstance(data, dict):
            return
        with self.lock:
            bar = self.bars.get(url)
            if bar is None:
                return
            seen = self.seen.setdefault(url, {})
            node = str(data.get("node"))
            value, total = int(data.get("value") or 0), int(data.get("max") or 0)
            if node not in seen:
                seen[node] = 0
                bar.total += total
            step = value - seen[node]
            if step > 0:
                seen[node] = value
                bar.update(step)
            bar.refresh()

    def item_done(self):
        if self.overall is not None:
            with self.lock:
                self.overall.update(1)

    def close(self):
        with self.lock:
            for bar in self.bars.values():
                bar.close()
            if self.overall is not None:
                self.overall.close()
            self.bars, self.overall = {}, None


# -- one item on one server ----------------------------------------------------------------------


class ItemRunner:
    """Runs one item on one server: queue, follow, fetch the images, write them, make the record."""

    def __init__(self, cs, pipeline, data, output: Path, progress, timeout: float, stop: threading.Event):
        self.cs = cs
        self.pl = pipeline
        self.data = data
        self.output = output
        self.progress = progress
        self.timeout = timeout
        self.stop = stop
        self.scheduler = None  # set once the scheduler exists: it hears of every sign of life
        self.names_lock = threading.Lock()
        self.first_messages = threading.Event()

    def _server_down(self, target) -> bool:
        try:
            self.cs.ComfyClient(target.url, timeout=5).system_stats()
            return False
        except Exception:
            return True

    def __call__(self, target, item) -> dict:
        if item.error:
            return self.pl.record_for(item, "failed", error=item.error)
        client = self.cs.ComfyClient(target.url)
        started = time.perf_counter()
        self.progress.start_item(target.url, item)
        try:
            return self._run(client, target, item, started)
        finally:
            client.close()

    def _event(self, target, item, kind, data):
        self.progress.on_event(target.url, kind, data)
        if self.scheduler is not None:
            ended = kind in ("execution_success", "execution_error", "execution_interrupted")
            self.scheduler.progressed(item.key, True if kind == "execution_start" else False if ended else None)

    def _stop_reason(self) -> str:
        return (self.scheduler.reason if self.scheduler is not None else None) or "interrupted"

    def _run(self, client, target, item, started) -> dict:
        pl = self.pl
        try:
            prompt_id = client.queue(item.prompt)
            target.prompt_ids.add(prompt_id)
            try:
                if self.stop.is_set():
                    raise self.cs.Stopped("the job was stopped as this item was queued")
                entry = client.wait(
                    prompt_id,
                    on_event=lambda kind, data: self._event(target, item, kind, data),
                    timeout=self.timeout,
                    stop=self.stop,
                )
            except (TimeoutError, self.cs.Stopped):
                take_back(self.cs, target.url, [prompt_id])  # it must not go on using the server
                raise
            finally:
                target.prompt_ids.discard(prompt_id)
            images = [i for i in client.images(entry) if i.get("type", "output") == "output"]
            files = []
            for image, name in zip(images, pl.output_names(item, images)):
                data = client.view(image["filename"], image.get("subfolder", ""), image.get("type", "output"))
                with self.names_lock:
                    path = self.output / self._free_name(name)
                    pl.write_output(path.parent, path.name, data)
                files.append({"path": path.name, "sha256": pl.sha256_bytes(data), "node_id": image.get("node_id")})
        except TimeoutError as e:
            return pl.record_for(
                item,
                "failed",
                server=target.url,
                seconds=round(time.perf_counter() - started, 3),
                error=f"{e}; it was taken back (give it more time with --timeout)",
            )
        except self.cs.WorkflowError as e:
            stopped = self.stop.is_set()
            missing = pl.model_errors(item.prompt, node_errors_of(e), self.data)
            return pl.record_for(
                item,
                "interrupted" if stopped else "failed",
                server=target.url,
                seconds=round(time.perf_counter() - started, 3),
                # The node is kept apart (node_id, node_type): the message alone, never the node twice.
                error=self._stop_reason() if stopped else e.message,
                node_id=None if stopped else e.node_id,
                node_type=None if stopped else e.node_type,
                **({"missing_models": missing} if missing and not stopped else {}),
            )
        except Exception as e:
            if self._server_down(target):
                # The cause alone: the server's URL is in the line that reports it.
                why = str(e).replace(f"ComfyUI at {target.url} cannot be reached: ", "")
                raise pl.ServerDown(
                    why if isinstance(e, self.cs.ComfyServerError) else f"{type(e).__name__}: {e}"
                ) from e
            raise
        seconds = time.perf_counter() - started
        if not self.first_messages.is_set():
            self.first_messages.set()
            for line in node_messages(item.prompt, entry):
                self.progress.write(line)
        return pl.record_for(
            item, "done", server=target.url, prompt_id=prompt_id, files=files, seconds=round(seconds, 3)
        )

    def _free_name(self, name: str) -> str:
        # Never overwrite a file that is already there (an earlier job's, or the user's).
        stem, ext = os.path.splitext(name)
        candidate, n = name, 1
        while (self.output / candidate).exists():
            n += 1
            candidate = f"{stem}-{n}{ext}"
        return candidate


def cancel(client, prompt_ids: list[str]):
    """Take our prompts back: delete the queued ones, interrupt the running one. Targeted by prompt
    id, so work that others queued on a shared server goes on."""
    if prompt_ids:
        client.request_json("POST", "/queue", {"delete": list(prompt_ids)})
    for prompt_id in prompt_ids:
        client.request_json("POST", "/interrupt", {"prompt_id": prompt_id})


def take_back(cs, url: str, prompt_ids: list[str]):
    """`cancel`, bounded by a short timeout and never raising: a server that does not answer has
    nothing of ours running that we could stop anyway."""
    try:
        cancel(cs.ComfyClient(url, timeout=2), prompt_ids)
    except Exception:
        pass


def node_messages(prompt: dict, entry: dict) -> list[str]:
    """The text the nodes report in their UI output (e.g. the loader's variant, the Turbo sampler's
    note on the negative prompt)."""
    lines = []
    for node_id, ui in ((entry or {}).get("outputs") or {}).items():
        for text in (ui or {}).get("text") or []:
            if isinstance(text, str) and text.strip() and node_id in prompt:
                title = (prompt[node_id].get("_meta") or {}).get("title", prompt[node_id]["class_type"])
                lines.append(f"  [{node_id} {title}] {text.strip()}")
    return lines


# -- errors --------------------------------------------------------------------------------------


def node_errors_of(err) -> dict:
    """ComfyUI's node_errors carried by a WorkflowError (validation), else {}."""
    details = getattr(err, "details", None)
    if not isinstance(details, dict):
        return {}
    if isinstance(details.get("node_errors"), dict):
        return details["node_errors"]
    return {k: v for k, v in details.items() if isinstance(v, dict) and "errors" in v}


def print_workflow_error(err, prompt: dict | None, data: dict, pipeline, demo: bool, verbose: bool):
    print(f"error: {err}", file=sys.stderr)
    details = getattr(err, "details", None)
    node_errors = node_errors_of(err)
    if isinstance(details, dict):
        for node_id, info in (node_errors or {}).items():
            if isinstance(info, dict) and "errors" in info and str(node_id) != str(getattr(err, "node_id", None)):
                msgs = "; ".join(f"{e.get('message')}: {e.get('details')}" for e in info["errors"])
                print(f"error: node {node_id} ({info.get('class_type')}): {msgs}", file=sys.stderr)
        if verbose and details.get("traceback"):
            print("".join(details["traceback"]), file=sys.stderr)
    if prompt is not None:
        # The hint about where model files go, only when the error is about model files.
        hint = pipeline.model_hint(data, pipeline.model_errors(prompt, node_errors, data), demo)
        if hint:
            print(hint, file=sys.stderr)


def validate_on(client, cs, prompt: dict) -> list[str]:
    """ComfyUI's own validation of the prompt, through /prompt, without running it.

    ComfyUI validates every output node with all its ancestors, and queues the prompt when at least
    one output validates. So each output node is sent with one of its own widget inputs left out
    (a PreviewImage, which has none, as a SaveImage without its prefix): every output then fails on
    that missing input alone, nothing is queued, and every other error of the graph comes back
    with the answer. Returns the output node ids; raises WorkflowError for the first real error."""
    info = client.object_info()
    outputs = [k for k, v in prompt.items() if (info.get(v["class_type"]) or {}).get("output_node")]
    if not outputs:
        raise cs.WorkflowError("the workflow has no output node (Save Image, Preview Image, ...)")
    probe = json.loads(json.dumps(prompt))
    expected = {}
    for node_id in outputs:
        entry = probe[node_id]
        required = ((info[entry["class_type"]].get("input") or {}).get("required")) or {}
        widgets = [n for n in required if n in entry["inputs"] and not is_link(entry["inputs"][n])]
        if not widgets and entry["class_type"] == "PreviewImage" and "SaveImage" in info:
            entry["class_type"], widgets = "SaveImage", ["filename_prefix"]
            entry["inputs"]["filename_prefix"] = None
        if not widgets:
            raise cs.WorkflowError(
                "--validate-only cannot check this output node without running it (it has no widget input)",
                node_id,
                entry["class_type"],
            )
        del entry["inputs"][widgets[0]]
        expected[node_id] = widgets[0]
    try:
        prompt_id = client.queue(probe)
    except cs.WorkflowError as e:
        node_errors = node_errors_of(e)
        if not node_errors:
            raise
        for node_id, node_info in node_errors.items():
            real = [
                x
                for x in node_info.get("errors") or []
                if not (
                    x.get("type") == "required_input_missing"
                    and str(node_id) in expected
                    and (x.get("extra_info") or {}).get("input_name") == expected[str(node_id)]
                )
            ]
            if real:
                msgs = "; ".join(f"{x.get('message')}: {x.get('details')}" for x in real)
                class_type = prompt.get(str(node_id), {}).get("class_type", node_info.get("class_type"))
                details = {"node_errors": {str(node_id): {**node_info, "errors": real}}}
                raise cs.WorkflowError(f"validation failed: {msgs}", str(node_id), class_type, details) from None
        return outputs
    client.interrupt()  # cannot happen with ComfyUI's validation; if it does, do not let it run
    raise RuntimeError(f"the server accepted a prompt it should have refused (prompt {prompt_id}); nothing checked")


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


# -- main ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_workflow.py",
        description="Run a ComfyUI workflow (editor or API format) through ComfyUI's server API, with Z-Image "
        "Nodes; one image, or a job of prompts x seeds over one or several servers.",
        epilog="ComfyUI is found as: --comfyui, $COMFYUI_PATH, the ComfyUI this pack is installed in, "
        "or ../ComfyUI beside the pack. Exit status: 0 done, 1 an item or the workflow failed, 2 usage/setup, "
        "130 interrupted.",
    )
    parser.add_argument("workflow", help="workflow JSON: saved from the editor, or an API-format export")
    parser.add_argument("--comfyui", metavar="PATH", help="ComfyUI checkout for the embedded server")
    parser.add_argument(
        "--server",
        dest="servers",
        action="append",
        default=[],
        metavar="URL",
        help="a running ComfyUI server to use instead of an embedded one, e.g. http://127.0.0.1:8188 (repeatable)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.input=value",
        help="set an input; NODE is an id, title or type; value as JSON if it parses (repeatable)",
    )
    parser.add_argument("--prompts", metavar="FILE", help=".txt (one prompt per line), .csv or .jsonl (columns)")
    parser.add_argument("--count", type=int, default=1, metavar="N", help="seeds per row, +1 each (default 1)")
    parser.add_argument(
        "--output", metavar="DIR", help="where images and manifest.jsonl go (default: the found ComfyUI's output/)"
    )
    parser.add_argument("--manifest", metavar="FILE", help="manifest path (default: DIR/manifest.jsonl)")
    parser.add_argument("--resume", action="store_true", help="skip the items the manifest records as done")
    parser.add_argument("--max-in-flight", type=int, default=2, metavar="K", help="prompts queued per server (2)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        metavar="S",
        help="seconds an item may run once it has started on a server; time in the queue does not count (1800)",
    )
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=600,
        metavar="S",
        help="stop the job when for S seconds none of its items ran, progressed or finished (a server's queue "
        "held by other work, or a stuck server); 0: no bound (600)",
    )
    parser.add_argument(
        "--demo-weights",
        action="store_true",
        help="tiny random-weight Z-Image files instead of the real ones (images are noise)",
    )
    parser.add_argument(
        "--demo-dir", metavar="DIR", help="where --demo-weights writes (and reuses) its files; default: a temp folder"
    )
    parser.add_argument("--validate-only", action="store_true", help="convert and validate, do not execute")
    parser.add_argument("--cpu", action="store_true", help="embedded server on the CPU even when a GPU is available")
    parser.add_argument("--save-api", metavar="FILE", help="also write the API-format prompt (before rows and seeds)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="ComfyUI's log and tracebacks")
    return parser


class Job:
    """What main() sets up and tears down: temp dirs, the embedded server, the demo-writer process."""

    def __init__(self):
        self.temp: Path | None = None
        self.server = None
        self.demo_proc = None
        self.quick = False

    def close(self):
        if self.demo_proc is not None and self.demo_proc.poll() is None:
            self.demo_proc.kill()
            self.demo_proc.communicate()
        if self.server is not None:
            self.server.stop(timeout=2 if self.quick else 20)
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _keep_pack_root_off_sys_path()
    headless, wc, pl, cs = load_tools()
    job = Job()
    prompt = None
    data = {}
    try:
        if args.count < 1:
            raise UsageError("--count must be at least 1")
        if args.max_in_flight < 1:
            raise UsageError("--max-in-flight must be at least 1")
        data = read_workflow(args.workflow)
        try:
            overrides = [wc.parse_override(text) for text in args.overrides]
            rows, kind = pl.read_rows(args.prompts) if args.prompts else (None, "csv")
        except (ValueError, pl.JobError) as e:
            raise UsageError(str(e)) from None

        comfyui, how = headless.find_comfyui(args.comfyui)
        output = Path(args.output) if args.output else (comfyui / "output" if comfyui else Path("output"))
        output = output.resolve()
        manifest_path = Path(args.manifest).resolve() if args.manifest else output / "manifest.jsonl"
        # Everything the job will write, checked before any server is started or asked.
        if not args.validate_only:
            check_folder(output, "--output" if args.output else "the output folder (--output)")
            check_file(manifest_path, "--manifest" if args.manifest else "the manifest (--manifest)")
        if args.save_api:
            check_file(Path(args.save_api).resolve(), "--save-api")

        # -- targets
        if args.servers:
            urls = [u.rstrip("/") for u in args.servers]
            for url in urls:
                if not pl.is_loopback(url):
                    print(f"note: {url} is not on this machine; using it because it was given explicitly")
        else:
            if comfyui is None:
                raise UsageError(
                    f"{how}.\nPass --comfyui PATH, set COMFYUI_PATH, install this pack in ComfyUI/custom_nodes/, "
                    "put ComfyUI beside the pack, or use --server URL."
                )
            job.temp = Path(tempfile.mkdtemp(prefix="zinodes_run_"))
            folders = {}
            if args.demo_weights:
                demo_root = Path(args.demo_dir).resolve() if args.demo_dir else job.temp / "models"
                job.demo_proc = start_demo_weights(comfyui, demo_root)
                folders = {kind_: [str(demo_root / kind_)] for kind_ in DEMO_KINDS}
                # Empty folders for the placeholders --validate-only may need (registered now, filled later).
                for kind_ in sorted(set(wc.CORE_MODEL_INPUTS.values()) | declared_dirs(data, wc)):
                    (job.temp / "placeholders" / kind_).mkdir(parents=True, exist_ok=True)
                    folders.setdefault(kind_, []).append(str(job.temp / "placeholders" / kind_))
            cpu = args.cpu or not has_accelerator()
            job.server = cs.ComfyServer(
                comfyui,
                model_folders=folders or None,
                cpu=cpu,
                log_path=job.temp / "server.log",
                verbose=args.verbose,
            )
            started = time.perf_counter()
            job.server.start()
            finish_demo_weights(job.demo_proc)
            job.demo_proc = None
            urls = [job.server.url]
            version = cs.ComfyClient(job.server.url).system_stats().get("system", {}).get("comfyui_version", "?")
            print(
                f"ComfyUI {version} at {comfyui} ({how}): embedded server {job.server.url} "
                f"({'CPU' if cpu else 'accelerator'}), up in {time.perf_counter() - started:.1f} s"
            )

        # -- the prompt, converted with the first reachable server's definitions
        infos = {}
        unreachable = {}
        for url in urls:
            try:
                infos[url] = pl.ObjectInfoDefinitions(cs.ComfyClient(url, timeout=30).object_info())
            except Exception as e:
                unreachable[url] = f"not reachable ({type(e).__name__}: {e})"
        if not infos:
            raise UsageError("no server to use:\n" + "\n".join(f"  {u}: {why}" for u, why in unreachable.items()))
        definitions = next(iter(infos.values()))
        warnings: list[str] = []
        prompt = wc.load_prompt(data, definitions, warnings)
        for w in warnings:
            print(f"warning: {w}")
        try:
            for line in wc.apply_overrides(prompt, overrides, definitions):
                print(f"set {line}")
        except wc.ConversionError as e:
            raise UsageError(str(e)) from None
        if args.save_api:
            # Before --demo-weights: the saved prompt is the workflow's, with its own model files.
            try:
                Path(args.save_api).write_text(json.dumps(prompt, indent=2) + "\n", encoding="utf-8")
            except OSError as e:
                raise UsageError(f"--save-api {args.save_api} cannot be written ({e.strerror or e})") from None
            print(f"API prompt written to {args.save_api}")
        if args.demo_weights:
            if setup_demo_prompt(wc, prompt, data, job, args.validate_only, args.servers):
                # Placeholders were just written: the server lists them now, our copy of its lists does not.
                infos = {url: pl.ObjectInfoDefinitions(cs.ComfyClient(url).object_info()) for url in infos}

        # -- servers that can run it
        refused = dict(unreachable)
        for url, defs in infos.items():
            problems = pl.check_server(defs, prompt, data)
            if problems:
                refused[url] = "; ".join(problems)
        for url, why in refused.items():
            print(f"server {url} refused: {why}", file=sys.stderr)
        usable = [u for u in urls if u not in refused]
        if not usable:
            missing = [m["name"] for defs in infos.values() for m in pl.missing_models(defs, prompt, data)]
            hint = pl.model_hint(data, missing, args.demo_weights)
            if hint:
                print(hint, file=sys.stderr)
            return 1 if any("model file" in why or "node types" in why for why in refused.values()) else 2

        if args.validate_only:
            outputs = validate_on(cs.ComfyClient(usable[0]), cs, prompt)
            print(f"valid: {len(prompt)} nodes, output nodes {', '.join(map(str, outputs))}")
            return 0

        status = run_job(args, pl, cs, prompt, data, rows, kind, definitions, usable, output, manifest_path)
        # After Ctrl-C the embedded server (ours, its folders temporary) gets a short clean stop only.
        job.quick = status == 130
        return status
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (cs.WorkflowError, wc.ConversionError) as e:
        print_workflow_error(e, prompt, data, pl, args.demo_weights, args.verbose)
        return 1
    except cs.ComfyServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        job.quick = True
        return 130
    finally:
        job.close()


def declared_dirs(data: dict, wc) -> set[str]:
    if not wc.is_ui_workflow(data):
        return set()
    return {
        str(m["directory"]).strip("/")
        for n in data["nodes"]
        for m in (n.get("properties") or {}).get("models") or []
        if isinstance(m, dict) and m.get("directory")
    }


def setup_demo_prompt(wc, prompt: dict, data: dict, job: Job, validate_only: bool, remote: bool) -> bool:
    """Point the Z-Image Loaders at the demo files. Other loaders' files cannot be stood in for: an
    error, or empty placeholders in the embedded server when only validating (returns True then)."""
    others = [o for o in wc.model_file_inputs(prompt, data) if (o["class_type"], o["input"]) not in wc.DEMO_STANDINS]
    if others and (not validate_only or remote):
        lines = "\n".join(f"  node {o['node_id']} ({o['class_type']}).{o['input']} = {o['name']!r}" for o in others)
        how = "" if remote else ", or add --validate-only to check the graph without running it"
        raise wc.ConversionError(
            "--demo-weights only stands in for the files of Z-Image Loader nodes; this workflow also loads:\n"
            f"{lines}\nRun it with the real model files{how}.",
            others[0]["node_id"],
            others[0]["class_type"],
        )
    for line in wc.use_demo_models(prompt, demo_names()):
        print(line)
    for o in others:
        if not o["directory"]:
            raise wc.ConversionError(
                f"cannot tell which models folder '{o['name']}' belongs in, so no placeholder can stand in for it",
                o["node_id"],
                o["class_type"],
            )
        placeholder = job.temp / "placeholders" / str(o["directory"]).strip("/") / o["name"]
        placeholder.parent.mkdir(parents=True, exist_ok=True)
        placeholder.touch()
        print(
            f"node {o['node_id']} ({o['class_type']}): empty placeholder for {o['directory']}/{o['name']} "
            "(validation only: it is never loaded)"
        )
    if not any(e.get("class_type") == wc.ZIMAGE_LOADER for e in prompt.values()) and not others:
        print("note: no Z-Image Loader in this workflow; --demo-weights changes nothing")
    print(
        "DEMO WEIGHTS: tiny random-weight Z-Image files stand in for the real ones. Images made with them are "
        "noise; this only shows that every node of the graph runs."
    )
    return bool(others)


def describe(record: dict, status: bool = True) -> str:
    """An item's outcome in one line: row, seed, status, server, and the node before the message."""
    seed = f"seed {record['seed']}" if record.get("seed") is not None else f"#{record['index'] + 1}"
    where = f" on {record['server']}" if record.get("server") else ""
    head = f"row {record['row']} {seed}" + (f": {record['status']}" if status else "") + where
    if record["status"] == "done":
        names = ", ".join(f["path"] for f in record.get("files") or []) or "no images"
        return f"{head} in {record['seconds']:.1f} s -> {names}"
    node = f"node {record['node_id']} ({record.get('node_type')}): " if record.get("node_id") is not None else ""
    return f"{head}: {node}{record.get('error')}"


def run_job(args, pl, cs, prompt, data, rows, kind, definitions, urls, output: Path, manifest_path: Path) -> int:
    try:
        items = pl.expand_items(prompt, rows, args.count, kind, definitions)
    except pl.JobError as e:
        raise UsageError(str(e)) from None
    manifest = pl.Manifest(manifest_path)
    skipped = 0
    if args.resume:
        try:
            done = manifest.done_keys(output)
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read the manifest {manifest.path} for --resume ({e})") from None
        before = len(items)
        items = [i for i in items if i.key not in done]
        skipped = before - len(items)
        print(f"resume: {skipped} of {before} item(s) already done in {manifest.path}")

    counts = {"done": 0, "failed": 0, "interrupted": 0, "skipped": skipped}
    images = [0]
    records = []
    progress = Progress(len(items), urls, enabled=not args.no_progress and bool(items))
    stop = threading.Event()
    runner = ItemRunner(cs, pl, data, output, progress, args.timeout, stop)

    def on_record(record):
        # Counted and printed first: the outcome is told even when the manifest cannot take it.
        records.append(record)
        counts[record["status"]] = counts.get(record["status"], 0) + 1
        images[0] += len(record.get("files") or [])
        progress.write(describe(record), err=record["status"] == "failed")
        progress.item_done()
        manifest.append(record)

    def on_server_down(target, why):
        left = [t.url for t in targets if t.alive]
        then = f"its items go to {', '.join(left)}" if left else "no server is left for the remaining items"
        progress.write(f"error: server {target.url} stopped answering ({why}); {then}", err=True)

    def on_stop(reason):
        if reason and reason.startswith("interrupted"):
            progress.write("Ctrl-C: taking the job's prompts back from every server (Ctrl-C again: at once)")
        else:
            progress.write(f"error: {reason}; stopping the job, taking its prompts back", err=True)

    targets = [pl.Target(url, cs.ComfyClient(url, timeout=10)) for url in urls]
    scheduler = pl.Scheduler(
        targets,
        runner,
        on_record,
        max_in_flight=args.max_in_flight,
        stall_timeout=args.queue_timeout or None,
        on_server_down=on_server_down,
        on_stop=on_stop,
    )
    runner.scheduler = scheduler
    scheduler.stop = stop  # one stop event: the scheduler sets it, every waiting item sees it
    if items:
        seeds = ", ".join(str(i.seed) for i in items[:6]) + (" ..." if len(items) > 6 else "")
        print(f"{len(items)} item(s) over {len(urls)} server(s) (seeds {seeds}); output: {output}")
    started = time.perf_counter()

    def on_sigint(signum, frame):
        scheduler.sigints += 1  # a flag only: the scheduler's loop acts on it within 0.1 s

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        scheduler.run(items)
    finally:
        signal.signal(signal.SIGINT, previous)
        progress.close()
    if scheduler.reason:
        # The workers take their own prompts back; after a second Ctrl-C they were not waited for,
        # so whatever is still ours on a server is taken back here, all servers at once, bounded.
        sweeps = [
            threading.Thread(target=take_back, args=(cs, t.url, t.prompt_ids), daemon=True)
            for t in targets
            if t.alive and t.prompt_ids
        ]
        for sweep in sweeps:
            sweep.start()
        deadline = time.monotonic() + 1.0
        for sweep in sweeps:
            sweep.join(max(0.0, deadline - time.monotonic()))
    seconds = time.perf_counter() - started

    per_server = {t.url: t.done for t in targets} if len(targets) > 1 else None
    print("\nsummary:")
    print(pl.summary_table(counts, images[0], seconds, per_server))
    if scheduler.unrecorded:
        print(f"manifest: {manifest.path} (without the {len(scheduler.unrecorded)} item(s) above it could not take)")
    else:
        print(f"manifest: {manifest.path}")
    if args.demo_weights:
        print("(demo weights: these images are noise)")
    for t in targets:
        if t.lost:
            print(f"server lost: {t.url} stopped answering ({t.lost})", file=sys.stderr)
    for record in records:
        if record["status"] == "failed":
            print("failed: " + describe(record, status=False), file=sys.stderr)
    if counts["interrupted"]:
        print(
            f"interrupted: {counts['interrupted']} item(s) not finished; run again with --resume to do them",
            file=sys.stderr,
        )
    missing = [name for record in records for name in record.get("missing_models") or []]
    hint = pl.model_hint(data, missing, args.demo_weights)
    if hint:
        print(hint, file=sys.stderr)
    if scheduler.reason and not scheduler.reason.startswith("interrupted"):
        print(f"error: the job stopped early: {scheduler.reason}", file=sys.stderr)
    if scheduler.sigints:
        return 130
    return 1 if counts["failed"] or counts["interrupted"] or scheduler.reason or scheduler.unrecorded else 0


if __name__ == "__main__":
    sys.exit(main())

"""Run one workflow as a job of many items (prompt rows x seeds) over one or more ComfyUI servers,
with a JSONL manifest that makes the job resumable.

Host-free: nothing here imports ComfyUI or torch. Servers are reached through
`tools/comfy_server.ComfyClient` (ComfyUI's HTTP/WebSocket API); node definitions come from a
server's /object_info. The CLI is tools/run_workflow.py.

Pieces, in job order:
- `ObjectInfoDefinitions`: /object_info as the definitions `workflow_convert` converts with.
- `read_rows`, `expand_items`: a prompts file (.txt/.csv/.jsonl) and --count into `Item`s, each one
  fully edited API prompt.
- `check_server`: a server is usable when it has every node type of the prompt and every model file.
- `Manifest`: one JSON line per finished item; `done_keys` is what --resume skips.
- `Scheduler`: items spread over servers, at most K in flight on each; a server that dies hands its
  items to the others; a failed item never stops the others.
- `summary_table`.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from . import workflow_convert as wc

PACK_PREFIX = "ZINodes"
# Input names of the Z-Image Loader that name model files, and the models folder each comes from.
ZIMAGE_LOADER_FILES = {"diffusion_model": "diffusion_models", "text_encoder": "text_encoders", "vae": "vae"}
SEED_COLUMN = "seed"


class JobError(ValueError):
    """The job cannot be set up (prompts file, columns, servers): a usage problem."""


class ManifestError(OSError):
    """The manifest cannot be written: the job cannot record what it did."""


# -- definitions from a server -------------------------------------------------------------------


class ObjectInfoDefinitions:
    """Node definitions from a server's /object_info, in the shape `workflow_convert` reads
    (INPUT_TYPES-like dicts). V1 and V3 nodes both arrive as {required, optional, hidden} with
    [type_or_options, opts] specs; V3 combos as ["COMBO", {"options": [...]}], which the converter
    reads like V1 option lists. `input_order` (when the server sends it) fixes the order."""

    def __init__(self, object_info: dict):
        self.info = object_info or {}
        self._cache: dict[str, dict] = {}

    def known(self, class_type: str) -> bool:
        return class_type in self.info

    def input_types(self, class_type: str) -> dict | None:
        node = self.info.get(class_type)
        if node is None:
            return None
        if class_type not in self._cache:
            raw = node.get("input") or {}
            order = node.get("input_order") or {}
            out = {}
            for section in ("required", "optional"):
                specs = raw.get(section) or {}
                names = [n for n in order.get(section) or [] if n in specs]
                names += [n for n in specs if n not in names]
                out[section] = {n: specs[n] for n in names}
            self._cache[class_type] = out
        return self._cache[class_type]

    def display_name(self, class_type: str) -> str:
        return (self.info.get(class_type) or {}).get("display_name") or class_type

    def outputs(self, class_type: str) -> list[tuple[str, str]]:
        node = self.info[class_type]
        types = [wc._type_name(t) for t in node.get("output") or ()]
        names = list(node.get("output_name") or types)
        return list(zip(names, types))

    def pack_nodes(self) -> list[str]:
        return sorted(k for k in self.info if k.startswith(PACK_PREFIX))

    def options(self, class_type: str, name: str) -> list | None:
        """The allowed values of a combo input, or None when it is not a combo."""
        for n, kind, opts, _ in wc.ordered_inputs(self.input_types(class_type) or {}):
            if n == name:
                if isinstance(kind, (list, tuple)):
                    return list(kind)
                if wc._type_name(kind) == "COMBO":
                    return list(opts.get("options") or [])
                return None
        return None


# -- model files ---------------------------------------------------------------------------------


def model_files(prompt: dict, workflow: dict | None = None) -> list[dict]:
    """Every model file the prompt loads: [{node_id, class_type, input, name, directory}]; the
    Z-Image Loader's three files and whatever `workflow_convert.model_file_inputs` finds."""
    found = []
    for node_id, entry in prompt.items():
        if entry.get("class_type") != wc.ZIMAGE_LOADER:
            continue
        for name, directory in ZIMAGE_LOADER_FILES.items():
            value = entry["inputs"].get(name)
            if isinstance(value, str):
                if value.startswith("[checkpoint] "):
                    directory = "checkpoints"
                found.append(
                    {
                        "node_id": node_id,
                        "class_type": entry["class_type"],
                        "input": name,
                        "name": value,
                        "directory": directory,
                    }
                )
    return found + wc.model_file_inputs(prompt, workflow)


def is_model_input(prompt: dict, node_id, input_name, workflow: dict | None = None) -> bool:
    return any(m["node_id"] == str(node_id) and m["input"] == input_name for m in model_files(prompt, workflow))


def model_hint(workflow: dict | None, missing_names, demo_weights: bool) -> str | None:
    """Where to get the missing model files, from the workflow's own properties.models entries
    (only those that are missing); None when the workflow names none of them."""
    missing_names = set(missing_names)
    if not missing_names or not (workflow and wc.is_ui_workflow(workflow)):
        return None
    entries = [
        (n.get("type"), m)
        for n in workflow["nodes"]
        for m in (n.get("properties") or {}).get("models") or []
        if isinstance(m, dict) and m.get("name") in missing_names
    ]
    if not entries:
        return None
    lines = [f"  {m.get('directory')}/{m.get('name')}  {m.get('url')}" for _, m in entries]
    # --demo-weights stands in for the Z-Image Loader's files only; for any other it would refuse.
    loader_files = {m.get("name") for node_type, m in entries if node_type == wc.ZIMAGE_LOADER}
    demo_can_help = not demo_weights and missing_names <= loader_files
    tail = ", or try --demo-weights" if demo_can_help else ""
    return "model files this workflow names (put them in ComfyUI/models/<directory>/)" + tail + ":\n" + "\n".join(lines)


def model_errors(prompt: dict, node_errors: dict, workflow: dict | None = None) -> list[str]:
    """The file names of validation errors (ComfyUI's node_errors) that are about model files."""
    names = []
    for node_id, info in (node_errors or {}).items():
        for err in (info or {}).get("errors") or []:
            extra = err.get("extra_info") or {}
            name, value = extra.get("input_name"), extra.get("received_value")
            if name and str(node_id) in prompt and is_model_input(prompt, node_id, name, workflow):
                names.append(value if isinstance(value, str) else prompt[str(node_id)]["inputs"].get(name))
    return [n for n in names if isinstance(n, str)]


# -- server checks -------------------------------------------------------------------------------


def is_loopback(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def check_server(definitions: ObjectInfoDefinitions, prompt: dict, workflow: dict | None = None) -> list[str]:
    """What this server lacks for the prompt (empty: usable): the pack, node types, model files."""
    problems = []
    if not definitions.pack_nodes():
        problems.append(f"Z-Image Nodes is not loaded (no {PACK_PREFIX}* node in /object_info)")
    missing_types = sorted({e["class_type"] for e in prompt.values() if not definitions.known(e["class_type"])})
    if missing_types:
        problems.append("node types missing: " + ", ".join(missing_types))
    for m in missing_models(definitions, prompt, workflow):
        where = f"{m['directory']}/" if m["directory"] else ""
        problems.append(f"model file missing: {where}{m['name']} (node {m['node_id']} {m['class_type']}.{m['input']})")
    return problems


def missing_models(definitions: ObjectInfoDefinitions, prompt: dict, workflow: dict | None = None) -> list[dict]:
    """The prompt's model files the server does not list (its /object_info combo options are its
    model folder listings, as validation sees them)."""
    out = []
    for m in model_files(prompt, workflow):
        if definitions.known(m["class_type"]):
            options = definitions.options(m["class_type"], m["input"])
            if options is not None and m["name"] not in options:
                out.append(m)
    return out


# -- jobs ----------------------------------------------------------------------------------------


def read_rows(path: str | os.PathLike) -> tuple[list[dict], str]:
    """Rows of a prompts file and its kind: .txt one prompt per line (blank lines and lines starting
    with # skipped) -> [{"text": line}]; .csv with a header row; .jsonl one JSON object per line."""
    p = Path(path)
    if not p.is_file():
        raise JobError(f"prompts file not found: {path}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise JobError(f"cannot read the prompts file {path} ({e}); give a readable UTF-8 text file") from None
    rows, kind = _parse_rows(path, p.suffix.lower(), text)
    if not rows:
        # Running the workflow once with its own prompt instead would look like success.
        what = {"csv": "no row under its header", "jsonl": "no JSON line", "txt": "no prompt line"}[kind]
        raise JobError(f"the prompts file {path} has {what}; add at least one, or leave out --prompts")
    return rows, kind


def _parse_rows(path, suffix: str, text: str) -> tuple[list[dict], str]:
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames:
            raise JobError(f"{path}: no header row (one column per --set target, e.g. Positive.text,seed)")
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if None in row:
                raise JobError(f"{path} line {line_no}: more values than columns")
            # Values stay text here; expand_items reads them as JSON unless the input is a STRING.
            rows.append({k.strip(): v for k, v in row.items() if v != ""})
        return rows, "csv"
    if suffix == ".jsonl":
        rows = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise JobError(f"{path} line {line_no}: not JSON ({e})") from None
            if not isinstance(row, dict):
                raise JobError(f"{path} line {line_no}: expected an object of column: value")
            rows.append(row)
        return rows, "jsonl"
    if suffix in (".txt", ""):
        lines = [line.strip() for line in text.splitlines()]
        return [{"text": line} for line in lines if line and not line.startswith("#")], "txt"
    raise JobError(f"{path}: prompts file must be .txt (one prompt per line), .csv or .jsonl")


def positive_text_target(prompt: dict) -> str:
    """The node whose `text` a .txt prompts file sets: the node titled Positive, else the one text
    encoder wired to a `positive` input."""
    titled = [k for k, e in prompt.items() if str((e.get("_meta") or {}).get("title", "")).lower() == "positive"]
    if len(titled) == 1 and "text" in prompt[titled[0]]["inputs"]:
        return titled[0]
    wired = set()
    for entry in prompt.values():
        link = entry["inputs"].get("positive")
        if isinstance(link, list) and len(link) == 2 and "text" in (prompt.get(str(link[0])) or {}).get("inputs", {}):
            wired.add(str(link[0]))
    if len(wired) == 1:
        return wired.pop()
    raise JobError(
        "cannot tell which node holds the positive prompt (no node titled 'Positive', and not exactly one "
        "text encoder wired to a 'positive' input); use a .csv or .jsonl file with a NODE.text column"
    )


@dataclass
class Item:
    """One queued prompt of the job."""

    key: str  # stable across runs: row, seed offset and the prompt's fingerprint
    row: int  # 1-based row of the prompts file (1 without one)
    index: int  # 0..count-1
    seed: int | None
    overrides: dict
    prompt: dict
    fingerprint: str
    name: str  # file name stem of its outputs
    attempts: int = 0
    servers_tried: list = field(default_factory=list)
    error: str | None = None  # set when the row itself is bad: the item fails without being queued


def fingerprint(prompt: dict) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _is_text_input(prompt: dict, node: str, name: str, definitions) -> bool:
    if definitions is None:
        return False
    for node_id in wc.find_nodes(prompt, node):
        for n, kind, _, _ in wc.ordered_inputs(definitions.input_types(prompt[node_id]["class_type"]) or {}):
            if n == name and wc._type_name(kind) == "STRING":
                return True
    return False


def row_overrides(row: dict, kind: str, prompt: dict, definitions=None) -> list[tuple[str, str, object]]:
    """(node, input, value) --set triples of a row; `seed` is handled apart (every seed input).
    Text from a .csv is read as JSON (like --set values) unless the input is a STRING."""
    out = []
    for column, value in row.items():
        if column == SEED_COLUMN:
            continue
        if kind == "txt" and column == "text":
            out.append((positive_text_target(prompt), "text", value))
            continue
        node, dot, name = str(column).rpartition(".")
        if not dot or not node or not name:
            raise JobError(f"column {column!r}: expected NODE.input (NODE: id, title or type) or 'seed'")
        if kind == "csv" and isinstance(value, str) and not _is_text_input(prompt, node, name, definitions):
            value = wc.parse_value(value)
        out.append((node, name, value))
    return out


def expand_items(prompt: dict, rows: list[dict] | None, count: int, kind: str = "csv", definitions=None) -> list[Item]:
    """Items for every row x count: the row's values set, then every numeric seed advanced by the
    count index. A row's `seed` column sets every seed input first. Without rows: count items."""
    if count < 1:
        raise JobError("--count must be at least 1")
    rows = rows if rows else [{}]
    items = []
    for row_no, row in enumerate(rows, start=1):
        base = copy.deepcopy(prompt)
        try:
            wc.apply_overrides(base, row_overrides(row, kind, prompt, definitions), definitions)
        except wc.ConversionError as e:
            raise JobError(f"row {row_no}: {e}") from None
        seeds = wc.seed_inputs(base)
        error = None
        if SEED_COLUMN in row:
            if not seeds:
                raise JobError(
                    f"row {row_no}: a seed column, but the workflow has no seed / noise_seed given as a number"
                )
            value = wc.parse_value(row[SEED_COLUMN]) if isinstance(row[SEED_COLUMN], str) else row[SEED_COLUMN]
            if isinstance(value, bool) or not isinstance(value, int):
                # A bad value fails its own row only, as a value the server refuses does.
                error = f"seed must be an integer, got {value!r}; fix that row and run again with --resume"
            else:
                for node_id, name in seeds:
                    base[node_id]["inputs"][name] = value % (wc.SEED_MAX + 1)
        for k in range(count):
            p = wc.with_seed_offset(base, k)
            seed = p[seeds[0][0]]["inputs"][seeds[0][1]] if seeds and error is None else None
            fp = fingerprint(p)
            name = f"row{row_no:04d}_seed{seed}" if seed is not None else f"row{row_no:04d}_n{k + 1}"
            items.append(
                Item(
                    key=f"row{row_no}-{k}-{fp}",
                    row=row_no,
                    index=k,
                    seed=seed,
                    overrides=dict(row),
                    prompt=p,
                    fingerprint=fp,
                    name=name,
                    error=error,
                )
            )
    return items


# -- manifest ------------------------------------------------------------------------------------


class Manifest:
    """JSONL, one line per finished (done, failed or interrupted) attempt of an item. A line is
    written whole with one write and flushed to disk, after the item's files are in place; the last
    line of an item wins."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock = threading.Lock()

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash: that item is simply not done
            if isinstance(record, dict) and "key" in record:
                out.append(record)
        return out

    def done_keys(self, base_dir: str | os.PathLike | None = None) -> set[str]:
        """Items whose last record is done and whose files are all still there."""
        last = {}
        for record in self.records():
            last[record["key"]] = record
        base = Path(base_dir) if base_dir else self.path.parent
        return {
            key
            for key, r in last.items()
            if r.get("status") == "done" and all((base / f["path"]).is_file() for f in r.get("files") or [])
        }

    def append(self, record: dict):
        try:
            self._append(record)
        except OSError as e:
            raise ManifestError(
                f"cannot write the manifest {self.path} ({e.strerror or e}); free space there or give "
                "--manifest a writable file, then run again with --resume"
            ) from e

    def _append(self, record: dict):
        line = json.dumps(record, default=str) + "\n"
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as f:
                # A line cut short by a crash stays a line of its own (and is skipped when read).
                if f.tell() > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        line = "\n" + line
                f.write(line.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())


def record_for(item: Item, status: str, **extra) -> dict:
    return {
        "key": item.key,
        "row": item.row,
        "index": item.index,
        "seed": item.seed,
        "overrides": item.overrides,
        "fingerprint": item.fingerprint,
        "status": status,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_output(directory: Path, name: str, data: bytes) -> Path:
    """Write through a temporary name and rename, so a file is either whole or absent."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / f".{name}.part"
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def output_names(item: Item, images: list[dict]) -> list[str]:
    """Local file names of an item's images: row and seed, plus node and index when it has several."""
    names = []
    for i, image in enumerate(images):
        ext = Path(image["filename"]).suffix or ".png"
        if len(images) == 1:
            names.append(item.name + ext)
        else:
            names.append(f"{item.name}_node{image.get('node_id')}_{i + 1}{ext}")
    return names


# -- scheduling ----------------------------------------------------------------------------------


class ServerDown(RuntimeError):
    """The server stopped answering while it had this item."""


@dataclass
class Target:
    """A server of the job: its URL, its client, and whether it still takes work."""

    url: str
    client: object
    alive: bool = True
    prompt_ids: set = field(default_factory=set)
    done: int = 0
    lost: str | None = None  # why it was given up (it stopped answering), None while it takes work


class Scheduler:
    """Spreads items over targets, at most `max_in_flight` prompts queued on each at a time.

    `process(target, item)` runs one item on one target and returns its manifest record; it raises
    ServerDown when the target stopped answering, and the item goes back to the queue for the other
    targets (at most once per target). Any other exception fails only that item.

    Every item ends with exactly one record, whatever happens in its life: `run` returns only when
    each has one. The job stops early (the remaining items recorded as interrupted or failed, with
    the reason in `reason`) when the caller's signal handler counted a Ctrl-C in `sigints`, when
    `on_record` fails (a manifest that cannot be written: going on would lose the record of every
    further item), or when the watchdog sees no item running and none progressing for
    `stall_timeout` seconds. `process` reports signs of life through `progressed`."""

    def __init__(
        self,
        targets: list[Target],
        process,
        on_record,
        max_in_flight: int = 2,
        retries_per_item=None,
        stall_timeout: float | None = None,
        on_server_down=None,
        on_stop=None,
        grace: float = 1.0,
    ):
        if max_in_flight < 1:
            raise JobError("--max-in-flight must be at least 1")
        self.targets = targets
        self.process = process
        self.on_record = on_record
        self.on_server_down = on_server_down
        self.on_stop = on_stop
        self.max_in_flight = max_in_flight
        self.retries = retries_per_item if retries_per_item is not None else len(targets)
        self.stall_timeout = stall_timeout
        self.grace = grace
        self.pending: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.items: dict[str, Item] = {}
        self.in_flight: dict[str, tuple[Target, Item]] = {}
        self.running: set[str] = set()
        self.outstanding = 0
        self.recorded: set[str] = set()
        self.unrecorded: list[dict] = []  # records on_record could not take (e.g. not written)
        self.finished = threading.Event()
        self.last_progress = time.monotonic()
        self.reason: str | None = None  # why the job stopped early
        self.stop_status = "interrupted"
        # Written by a signal handler (a plain counter: a handler must not take locks); read by run().
        self.sigints = 0
        self.threads: list[threading.Thread] = []

    # -- bookkeeping -------------------------------------------------------------------------

    def request_stop(self, reason: str, status: str = "interrupted"):
        with self.lock:
            if self.reason is None:
                self.reason, self.stop_status = reason, status
        self.stop.set()

    def progressed(self, key: str | None = None, running: bool | None = None):
        """A sign of life of an item (any server event); running=True when it starts executing,
        False when its execution ended."""
        with self.lock:
            self.last_progress = time.monotonic()
            if key is not None and running is True:
                self.running.add(key)
            elif key is not None and running is False:
                self.running.discard(key)

    def _finish(self, record: dict):
        with self.lock:
            # After a stop an item recorded as interrupted may still come back from its worker.
            if record["key"] in self.recorded:
                return
            self.recorded.add(record["key"])
        try:
            self.on_record(record)
        except Exception as e:
            self.unrecorded.append(record)
            why = str(e) if isinstance(e, ManifestError) else f"recording an item failed ({type(e).__name__}: {e})"
            self.request_stop(why, status="failed")
        finally:
            with self.lock:
                self.outstanding -= 1
                self.last_progress = time.monotonic()
                if self.outstanding <= 0:
                    self.finished.set()

    def _server_lost(self, target: Target, why: str):
        with self.lock:
            first = target.alive
            target.alive = False
            if first:
                target.lost = why
        if first and self.on_server_down is not None:
            try:
                self.on_server_down(target, why)
            except Exception:
                pass  # a report that cannot be printed must not lose the item

    def _release(self, target: Target, item: Item):
        with self.lock:
            if self.in_flight.get(item.key, (None,))[0] is target:
                del self.in_flight[item.key]
            self.running.discard(item.key)

    # -- workers -----------------------------------------------------------------------------

    def _worker(self, target: Target):
        while not self.stop.is_set() and target.alive:
            try:
                item = self.pending.get(timeout=0.1)
            except queue.Empty:
                if self.finished.is_set():
                    return
                continue
            if self.stop.is_set() or not target.alive:
                self.pending.put(item)  # never started here: the others or the wind-down account for it
                return
            with self.lock:
                self.in_flight[item.key] = (target, item)
            try:
                self._run_one(target, item)
            except BaseException as e:  # whatever it was, the item ends with a record
                self._finish(record_for(item, "failed", server=target.url, error=f"{type(e).__name__}: {e}"))
            finally:
                self._release(target, item)

    def _run_one(self, target: Target, item: Item):
        item.attempts += 1
        item.servers_tried.append(target.url)
        try:
            record = self.process(target, item)
        except ServerDown as e:
            self._release(target, item)
            self._server_lost(target, str(e))
            if self.stop.is_set():
                self._finish(record_for(item, self.stop_status, server=target.url, error=self.reason or str(e)))
            elif any(t.alive for t in self.targets) and item.attempts <= self.retries:
                self.pending.put(item)
            else:
                self._finish(record_for(item, "failed", server=target.url, error=f"no server left: {e}"))
            return
        except Exception as e:  # one item's failure never stops the others
            record = record_for(item, "failed", server=target.url, error=f"{type(e).__name__}: {e}")
        if record.get("status") == "done":
            target.done += 1
        self._finish(record)

    # -- the job -----------------------------------------------------------------------------

    def run(self, items: list[Item]):
        """Run all items; returns when every item has a record. After an early stop `reason` says
        why (`stop_status` is how the items left over were recorded)."""
        if not items:
            return
        self.outstanding = len(items)
        self.last_progress = time.monotonic()
        for item in items:
            self.items[item.key] = item
            self.pending.put(item)
        self.threads = [
            threading.Thread(target=self._worker, args=(t,), daemon=True, name=f"pipeline-{t.url}-{i}")
            for t in self.targets
            for i in range(self.max_in_flight)
        ]
        for thread in self.threads:
            thread.start()
        # Short waits: the main thread notices a Ctrl-C counted by the handler within 0.1 s.
        while not self.finished.wait(0.1):
            if self.sigints and not self.stop.is_set():
                self.request_stop("interrupted (Ctrl-C)")
            if self.stop.is_set():
                break
            with self.lock:
                idle = time.monotonic() - self.last_progress
                quiet = not self.running
            if self.stall_timeout is not None and quiet and idle > self.stall_timeout:
                self.request_stop(
                    f"no item started, progressed or finished for {self.stall_timeout:g} s (a server's queue is "
                    "held by other work, or a server is stuck); run again later with --resume",
                    status="failed",
                )
                break
            if not any(thread.is_alive() for thread in self.threads):
                # Every worker is gone: every server stopped answering.
                self.request_stop("no server left to run it (every server stopped answering)", status="failed")
                break
        if not self.finished.is_set():
            self._wind_down()

    def _wind_down(self):
        """Account for every item left after a stop: in-flight items get `grace` seconds (cut short
        by a second Ctrl-C) to come back from their workers, which take their prompts back; every
        other item is recorded with the stop's status and reason."""
        self.stop.set()
        if self.on_stop is not None:
            try:
                self.on_stop(self.reason)
            except Exception:
                pass
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and self.sigints < 2 and not self.finished.is_set():
            with self.lock:
                if not self.in_flight:
                    break
            self.finished.wait(0.05)
        with self.lock:
            where = {key: target.url for key, (target, _) in self.in_flight.items()}
            left = [item for key, item in self.items.items() if key not in self.recorded]
        for item in left:
            extra = {"server": where[item.key]} if item.key in where else {}
            self._finish(record_for(item, self.stop_status, error=self.reason, **extra))


# -- summary -------------------------------------------------------------------------------------


def summary_table(counts: dict, images: int, seconds: float, per_server: dict | None = None) -> str:
    rate = images / seconds * 60 if seconds > 0 else 0.0
    rows = [
        ("done", counts.get("done", 0)),
        ("failed", counts.get("failed", 0)),
        ("interrupted", counts.get("interrupted", 0)),
        ("skipped (resume)", counts.get("skipped", 0)),
        ("images", images),
        ("seconds", f"{seconds:.1f}"),
        ("images / minute", f"{rate:.2f}"),
    ]
    for url, n in (per_server or {}).items():
        rows.append((f"done on {url}", n))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)

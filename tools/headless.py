"""Boot a ComfyUI checkout in this process, with no web server: ComfyUI's node registry, model
management and validation, with the pack loaded through ComfyUI's own custom-node loader, exactly as
a ComfyUI start-up would. For node-level work (tests calling nodes, the benchmark, demo weights).

Whole graphs do not run here: ComfyUI's executor is an internal that changes between releases
(v0.33 needs cache arguments v0.8 never had). `Host.run` hands the prompt to a ComfyUI server
(tools/comfy_server.py): one attached with `use_server`, else the checkout's own server, started at
the first run with the model folders added so far.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .comfy_server import ComfyServerError, WorkflowError  # noqa: F401  (re-exported: one error type for both paths)

PACK_DIR = Path(__file__).resolve().parent.parent


def find_comfyui(explicit: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """Locate a ComfyUI checkout: explicit path, $COMFYUI_PATH, the ComfyUI this pack sits in
    (ComfyUI/custom_nodes/<pack>), or ../ComfyUI beside the pack. Returns (path, how it was found)
    or (None, why not)."""
    candidates = []
    if explicit:
        candidates.append((Path(explicit), "given explicitly"))
    if os.environ.get("COMFYUI_PATH"):
        candidates.append((Path(os.environ["COMFYUI_PATH"]), "COMFYUI_PATH"))
    if PACK_DIR.parent.name == "custom_nodes":
        candidates.append((PACK_DIR.parent.parent, "the pack sits in its custom_nodes"))
    candidates.append((PACK_DIR.parent / "ComfyUI", "../ComfyUI beside the pack"))
    tried = []
    for path, how in candidates:
        if (path / "comfy" / "model_management.py").is_file() and (path / "execution.py").is_file():
            return path.resolve(), how
        tried.append(f"{path} ({how})")
    return None, "no ComfyUI checkout found; looked at: " + "; ".join(tried)


class _EventLog:
    """The events of the last `Host.run` (as the server sent them), and a `send_sync` for code that
    reports progress the way ComfyUI's PromptServer does."""

    def __init__(self):
        self.events: list[tuple[str, object]] = []
        self.on_event = None

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data))
        if self.on_event is not None:
            self.on_event(event, data)


@dataclass
class RunResult:
    outputs: dict
    events: list = field(default_factory=list)


class Host:
    """A booted ComfyUI with this pack loaded through ComfyUI's custom-node loader."""

    def __init__(
        self,
        comfyui_path: Path,
        cpu: bool = True,
        output_dir: str | None = None,
        verbose: bool = False,
        input_dir: str | None = None,
        api_nodes: bool = False,
    ):
        self.path = Path(comfyui_path).resolve()
        self.cpu = cpu
        self.model_folders: dict[str, list[str]] = {}  # added with add_model_folder; a server gets them too
        if str(self.path) not in sys.path:
            sys.path.insert(0, str(self.path))
        import comfy.options  # noqa: F401  (args parsing stays off: the host must not read our argv)

        # As in main.py: bind ComfyUI's `utils` package before anything puts comfy/ (with its
        # utils.py) first on sys.path, or server-dependent core nodes fail to import.
        import utils.extra_config  # noqa: F401
        from comfy.cli_args import args

        # Must precede the first import of comfy.model_management, which picks the device at import.
        if cpu:
            args.cpu = True
        if output_dir:
            args.output_directory = str(output_dir)
        if not verbose:
            logging.getLogger().setLevel(logging.WARNING)

        import folder_paths

        if output_dir:
            folder_paths.set_output_directory(str(output_dir))
        # Core nodes create folders in the input directory when they register (input/3d): keep
        # them out of the user's checkout.
        self._input_tmp = None
        if input_dir is None:
            self._input_tmp = tempfile.TemporaryDirectory(prefix="zimage-comfy-input-")
            input_dir = self._input_tmp.name
        folder_paths.set_input_directory(str(input_dir))
        import comfy.model_management  # noqa: F401
        import execution

        # ComfyUI's own top-level nodes.py (its node registry and custom-node loader), never this
        # pack's nodes/ folder: the pack root is not on sys.path.
        import nodes as comfy_nodes

        self.folder_paths = folder_paths
        self.execution = execution
        self.comfy_nodes = comfy_nodes
        self.server = _EventLog()
        self._connect = None
        failed = asyncio.run(comfy_nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=api_nodes))
        self.core_import_failures = list(failed or [])
        before = set(comfy_nodes.NODE_CLASS_MAPPINGS)
        self.core_node_ids = frozenset(before)  # what ComfyUI itself registers, before the pack
        self.pack_loaded = asyncio.run(comfy_nodes.load_custom_node(str(PACK_DIR)))
        self.pack_nodes = sorted(set(comfy_nodes.NODE_CLASS_MAPPINGS) - before)
        # The pack's root package as ComfyUI's loader named it (the folder path, dots escaped).
        self.pack = sys.modules.get(str(PACK_DIR).replace(".", "_x_"))
        self.version = _read_version(self.path)

    def add_model_folder(self, kind: str, path: str | os.PathLike):
        self.folder_paths.add_model_folder_path(kind, str(path), is_default=True)
        self.model_folders.setdefault(kind, []).append(str(path))

    def node_class(self, class_type: str):
        return self.comfy_nodes.NODE_CLASS_MAPPINGS[class_type]

    def call(self, class_type: str, **inputs):
        """Run one node the way ComfyUI's executor calls it (V3 `execute`, V1 FUNCTION), without the
        executor's graph and caching around it; returns its outputs (index them as the links do)."""
        cls = self.node_class(class_type)
        if hasattr(cls, "FUNCTION") and not hasattr(cls, "GET_SCHEMA"):
            return getattr(cls(), cls.FUNCTION)(**inputs)
        return cls.execute(**inputs).args

    def validate(self, prompt: dict) -> list:
        ok, error, outputs, node_errors = asyncio.run(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))
        if not ok:
            for node_id, info in (node_errors or {}).items():
                msgs = "; ".join(f"{e.get('message')}: {e.get('details')}" for e in info.get("errors", []))
                raise WorkflowError(f"validation failed: {msgs}", node_id, info.get("class_type"), node_errors)
            raise WorkflowError(f"validation failed: {error.get('message')}: {error.get('details')}", details=error)
        return outputs

    def use_server(self, connect):
        """Run graphs on a ComfyUI server: `connect()` returns a comfy_server.ComfyClient (called at
        the first run, so a server is started only when a graph runs)."""
        self._connect = connect

    def _own_server(self):
        """With no server attached: this checkout's server, started once, with the model folders and
        output directory of this host (stopped at exit)."""
        from .comfy_server import ComfyServer

        if getattr(self, "_server", None) is None or not self._server.alive():
            self._server = ComfyServer(
                self.path,
                model_folders=self.model_folders,
                output_dir=self.folder_paths.get_output_directory(),
                cpu=self.cpu,
            ).start()
            self._client = self._server.client()
        return self._client

    def run(self, prompt: dict, on_event=None, timeout: float | None = None) -> RunResult:
        """Run an API-format prompt on the attached server (by default this checkout's own, started
        at the first run); raise WorkflowError naming the failing node."""
        if self._connect is None:
            self.use_server(self._own_server)
        client = self._connect()
        self.server.events = []
        self.server.on_event = on_event
        entry = client.run(prompt, on_event=self.server.send_sync, timeout=timeout)
        return RunResult(outputs=entry.get("outputs") or {}, events=list(self.server.events))


def _read_version(path: Path) -> str:
    try:
        text = (path / "comfyui_version.py").read_text()
        return text.split('"')[1]
    except (OSError, IndexError):
        return "unknown"


_HOST: Host | None = None


def boot(comfyui_path, **kwargs) -> Host:
    """One host per process: ComfyUI's registries and model management are process-global."""
    global _HOST
    if _HOST is None:
        _HOST = Host(comfyui_path, **kwargs)
    return _HOST

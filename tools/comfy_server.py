"""Run graphs on a real ComfyUI through its public server API: start the found checkout's own
`main.py` as a subprocess on a free loopback port with this pack installed, then queue prompts,
follow their progress over the WebSocket and fetch the outputs over HTTP.

Nothing the user owns is modified: the pack is installed by a symlink in a temporary custom-nodes
folder handed to ComfyUI through a temporary extra_model_paths file (the user's other packs stay off
unless asked for), and output, input, temp, user folders and the database all live in a temporary
folder that is removed on stop (an output folder you pass is kept).

Stdlib only (the WebSocket client is a minimal RFC 6455 reader), so it runs in any Python that can
start ComfyUI, and every request and wait is bounded by a timeout.
"""

from __future__ import annotations

import atexit
import base64
import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import weakref
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
LOG_TAIL_LINES = 60


class ComfyServerError(RuntimeError):
    """The server failed to start, died, or cannot be reached; the message ends with its log tail."""


class WorkflowError(RuntimeError):
    """A prompt failed validation or execution; carries the node and ComfyUI's message."""

    def __init__(self, message: str, node_id: str | None = None, node_type: str | None = None, details=None):
        where = f"node {node_id} ({node_type}): " if node_id is not None else ""
        super().__init__(where + message)
        self.node_id = node_id
        self.node_type = node_type
        self.message = message
        self.details = details


class Stopped(WorkflowError):
    """The caller stopped waiting (its stop event was set); the prompt may still be on the server."""

    def __init__(self, message: str):
        super().__init__(message)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def comfyui_version(comfyui) -> str:
    try:
        return (Path(comfyui) / "comfyui_version.py").read_text().split('"')[1]
    except (OSError, IndexError):
        return "unknown"


def _yaml_quote(value: str) -> str:
    # JSON strings are valid YAML scalars: no escaping rules of our own for odd paths.
    return json.dumps(str(value))


def _die_with_parent():
    # Linux: the server gets SIGTERM when the process that started it dies, even by SIGKILL,
    # so a crashed test run or runner leaves no orphan holding memory and a port.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_all():
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop(timeout=10)


class ComfyServer:
    """A ComfyUI server process of the checkout `comfyui`, with this pack installed.

    model_folders: {"diffusion_models": [path, ...], ...}, added as extra model paths (listed first).
    other_packs: also load the custom nodes installed in the checkout (default: only this pack, so a
    test or a run sees ComfyUI core plus this pack, whatever else the user has installed).
    extra_custom_nodes: further custom-node folders (or .py files) to install beside the pack.
    """

    def __init__(
        self,
        comfyui,
        *,
        python=sys.executable,
        model_folders: dict[str, list] | None = None,
        output_dir=None,
        cpu=True,
        port=None,
        extra_args=(),
        log_path=None,
        verbose=False,
        other_packs=False,
        extra_custom_nodes=(),
        api_nodes=False,
    ):
        self.comfyui = Path(comfyui).resolve()
        if not (self.comfyui / "main.py").is_file():
            raise ComfyServerError(f"{self.comfyui} is not a ComfyUI checkout (no main.py)")
        self.python = str(python)
        self.model_folders = {k: [str(Path(p).resolve()) for p in v] for k, v in (model_folders or {}).items()}
        self.output_dir = Path(output_dir).resolve() if output_dir else None
        self.cpu = cpu
        self.port = port
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path) if log_path else None
        self.verbose = verbose
        self.other_packs = other_packs
        self.extra_custom_nodes = [Path(p).resolve() for p in extra_custom_nodes]
        self.api_nodes = api_nodes
        self.version = comfyui_version(self.comfyui)
        self.url = ""
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._tmp: Path | None = None
        self._tail: collections.deque = collections.deque(maxlen=LOG_TAIL_LINES)
        self._reader: threading.Thread | None = None
        self._log_file = None

    # -- set-up ------------------------------------------------------------------------------

    def _pack_entry(self, custom_nodes: Path) -> str:
        """Install the pack for this run; returns its folder name for ComfyUI's whitelist."""
        user_custom = self.comfyui / "custom_nodes"
        if PACK_DIR.parent.resolve() == user_custom.resolve():
            return PACK_DIR.name  # already installed in this checkout: load it from there
        name = PACK_DIR.name
        if (user_custom / name).exists():
            name += "-under-test"  # another copy of the pack is installed; never load both
        (custom_nodes / name).symlink_to(PACK_DIR, target_is_directory=True)
        return name

    def _command(self) -> list[str]:
        tmp = self._tmp
        custom_nodes = tmp / "custom_nodes"
        custom_nodes.mkdir()
        whitelist = [self._pack_entry(custom_nodes)]
        for extra in self.extra_custom_nodes:
            (custom_nodes / extra.name).symlink_to(extra, target_is_directory=extra.is_dir())
            whitelist.append(extra.name)
        lines = ["zimage_nodes_run:", f"  custom_nodes: {_yaml_quote(custom_nodes)}"]
        if self.model_folders:
            lines.append("  is_default: true")
        for kind, paths in self.model_folders.items():
            if paths:
                lines.append(f"  {kind}: {_yaml_quote(chr(10).join(paths))}")
        config = tmp / "extra_model_paths.yaml"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        for sub in ("input", "temp", "user"):
            (tmp / sub).mkdir()
        output = self.output_dir or tmp / "output"
        output.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.python,
            str(self.comfyui / "main.py"),
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--extra-model-paths-config",
            str(config),
            "--output-directory",
            str(output),
            "--input-directory",
            str(tmp / "input"),
            "--temp-directory",
            str(tmp / "temp"),
            "--user-directory",
            str(tmp / "user"),
            "--database-url",
            f"sqlite:///{tmp / 'user' / 'comfyui.db'}",
            "--disable-auto-launch",
        ]
        if not self.other_packs:
            cmd += ["--disable-all-custom-nodes", "--whitelist-custom-nodes", *whitelist]
        if not self.api_nodes:
            cmd.append("--disable-api-nodes")
        if self.cpu:
            cmd.append("--cpu")
        return cmd + self.extra_args

    def _read_output(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            self._tail.append(line.rstrip("\n"))
            if self._log_file is not None:
                with contextlib.suppress(ValueError):
                    self._log_file.write(line)
                    self._log_file.flush()
            if self.verbose:
                sys.stderr.write(line)
        stream.close()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(list(self._tail)[-lines:])

    def _fail(self, why: str) -> ComfyServerError:
        tail = self.log_tail()
        where = f" (full log: {self.log_path})" if self.log_path else ""
        return ComfyServerError(
            f"ComfyUI {self.version} at {self.comfyui}: {why}{where}\n--- server log tail ---\n{tail}"
        )

    # -- life cycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 180) -> ComfyServer:
        if self._proc is not None:
            return self
        asked_port = self.port
        for attempt in range(3):
            self.port = asked_port or free_port()
            try:
                return self._start_once(timeout)
            except ComfyServerError:
                # Another process may have taken the free port between our probe and the bind.
                in_use = "address already in use" in self.log_tail().lower() or "errno 98" in self.log_tail().lower()
                self.stop()
                if asked_port or not in_use or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> ComfyServer:
        self._tmp = Path(tempfile.mkdtemp(prefix="zimage-comfy-"))
        self._tail.clear()
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in stop)
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        began = time.monotonic()
        self._proc = subprocess.Popen(
            self._command(),
            cwd=str(self._tmp),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us; we stop the server
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        _LIVE.add(self)
        self._reader = threading.Thread(target=self._read_output, args=(self._proc.stdout,), daemon=True)
        self._reader.start()
        client = ComfyClient(self.url, timeout=5)
        deadline = began + timeout
        while True:
            if self._proc.poll() is not None:
                self._reader.join(timeout=5)
                raise self._fail(f"the server exited with status {self._proc.returncode} while starting")
            with contextlib.suppress(OSError, ComfyServerError, ValueError):
                client.system_stats()
                break
            if time.monotonic() > deadline:
                raise self._fail(f"no answer on {self.url} within {timeout:.0f} s")
            time.sleep(0.25)
        self.startup_seconds = time.monotonic() - began
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def check(self):
        """Raise ComfyServerError (with the log tail) if the server is not running."""
        if self._proc is None:
            raise ComfyServerError("the ComfyUI server was not started")
        if self._proc.poll() is not None:
            raise self._fail(f"the server died (exit status {self._proc.returncode})")

    def stop(self, timeout: float = 20) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                # SIGINT is ComfyUI's own clean shutdown (KeyboardInterrupt in main.py).
                steps = ((signal.SIGINT, timeout * 0.6), (signal.SIGTERM, timeout * 0.3), (signal.SIGKILL, None))
                for sig, wait in steps:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)  # its own session: children of the server go too
                    try:
                        proc.wait(timeout=wait if wait is not None else 10)
                        break
                    except subprocess.TimeoutExpired:
                        continue
            if self._reader is not None:
                self._reader.join(timeout=5)
        _LIVE.discard(self)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def client(self, timeout: float = 30.0) -> ComfyClient:
        return ComfyClient(self.url, timeout=timeout, server=self)

    @property
    def output_directory(self) -> Path:
        return self.output_dir or (self._tmp / "output")

    @property
    def input_directory(self) -> Path:
        return self._tmp / "input"

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.stop(timeout=5)


# -- WebSocket (RFC 6455, client side, text frames only) -------------------------------------------


class _WebSocket:
    def __init__(self, url: str, timeout: float):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + ("?" + parts.query if parts.query else "")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("WebSocket handshake: connection closed")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"WebSocket handshake refused: {status.decode(errors='replace')}")
        self.partial: list[bytes] = []

    def _frame(self):
        """(fin, opcode, payload) of the first complete frame in the buffer, consumed; or None.
        Nothing is consumed until a whole frame is there, so a timeout never splits a frame."""
        buf = self.buffer
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        n, at = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, at = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, at = struct.unpack(">Q", buf[2:10])[0], 10
        mask = None
        if b1 & 0x80:
            if len(buf) < at + 4:
                return None
            mask, at = buf[at : at + 4], at + 4
        if len(buf) < at + n:
            return None
        payload = buf[at : at + n]
        self.buffer = buf[at + n :]
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def _send(self, opcode: int, payload: bytes = b""):
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive(self, timeout: float) -> str | None:
        """The next text message, None if none arrived within `timeout` (binary previews are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._frame()
            if frame is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.sock.settimeout(left)
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError:
                    return None
                if not chunk:
                    raise ConnectionError("WebSocket closed by the server")
                self.buffer += chunk
                continue
            fin, opcode, payload = frame
            if opcode == 0x8:
                raise ConnectionError("WebSocket closed by the server")
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode in (0x1, 0x2):
                self.partial = [bytes([opcode])]
            if opcode in (0x0, 0x1, 0x2) and self.partial:  # a message, possibly in fragments
                self.partial.append(payload)
                if not fin:
                    continue
                kind, data = self.partial[0], b"".join(self.partial[1:])
                self.partial = []
                if kind == b"\x01":
                    return data.decode("utf-8", "replace")

    def close(self):
        with contextlib.suppress(OSError):
            self._send(0x8, struct.pack(">H", 1000))
        with contextlib.suppress(OSError):
            self.sock.close()


# -- client ----------------------------------------------------------------------------------------


class ComfyClient:
    """ComfyUI's HTTP and WebSocket API. One WebSocket per client (its client id), opened before the
    first prompt is queued so that no event of that prompt is missed."""

    def __init__(self, url: str, timeout: float = 30.0, server: ComfyServer | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.server = server
        self.client_id = uuid.uuid4().hex
        self._ws: _WebSocket | None = None

    # -- plumbing ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, body=None, timeout: float | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError) as e:
            raise self._unreachable(f"{method} {path}: {getattr(e, 'reason', e)}") from e

    def _unreachable(self, why: str) -> ComfyServerError:
        if self.server is not None and not self.server.alive() and self.server._proc is None:
            return ComfyServerError(f"the ComfyUI server at {self.url} is stopped ({why})")
        if self.server is not None:
            try:
                self.server.check()
            except ComfyServerError as died:
                return died
        return ComfyServerError(f"ComfyUI at {self.url} cannot be reached: {why}")

    def _json(self, method: str, path: str, body=None, timeout=None):
        return json.loads(self._request(method, path, body, timeout) or b"null")

    def request_json(self, method: str, path: str, body=None, timeout: float | None = None):
        """Any JSON route (e.g. one a custom node adds); bounded like every request."""
        return self._json(method, path, body, timeout)

    def _connect(self):
        if self._ws is None:
            ws_url = self.url.replace("http", "ws", 1) + "/ws?clientId=" + self.client_id
            try:
                self._ws = _WebSocket(ws_url, self.timeout)
            except OSError as e:
                raise self._unreachable(f"WebSocket: {e}") from e
        return self._ws

    def close(self):
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    # -- API ---------------------------------------------------------------------------------

    def system_stats(self) -> dict:
        return self._json("GET", "/system_stats")

    def object_info(self) -> dict:
        return self._json("GET", "/object_info", timeout=max(self.timeout, 60))

    def models(self, folder: str) -> list[str]:
        return self._json("GET", "/models/" + urllib.parse.quote(folder))

    def queue(self, prompt: dict, client_id: str | None = None) -> str:
        """Queue an API-format prompt; returns its prompt id. A prompt that fails ComfyUI's
        validation raises WorkflowError naming the first failing node."""
        if client_id is None:
            client_id = self.client_id
            self._connect()
        try:
            answer = self._json("POST", "/prompt", {"prompt": prompt, "client_id": client_id})
        except urllib.error.HTTPError as e:
            try:
                answer = json.loads(e.read() or b"{}")
            except ValueError:
                raise WorkflowError(f"ComfyUI refused the prompt: HTTP {e.code} {e.reason}") from None
            raise _validation_error(answer, prompt) from None
        if answer.get("node_errors"):
            # ComfyUI queues the outputs that validated and drops the others; a partial graph is
            # not what was asked for, so take it back and fail.
            with contextlib.suppress(Exception):
                self._json("POST", "/queue", {"delete": [answer["prompt_id"]]})
                self._json("POST", "/interrupt", {"prompt_id": answer["prompt_id"]})
            raise _validation_error(answer, prompt)
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self._json("GET", "/history/" + urllib.parse.quote(prompt_id)).get(prompt_id)

    def wait(self, prompt_id: str, on_event=None, timeout: float | None = None, stop=None) -> dict:
        """Follow the prompt's events until it ends; returns its /history entry. Raises
        WorkflowError (naming the node) when it fails or is interrupted, TimeoutError when it has
        run `timeout` seconds, counted from its `execution_start` event (time waiting in the queue
        does not count; without events, from now), ComfyServerError when the server goes away,
        Stopped as soon as `stop` (a threading.Event) is set: the caller takes the prompt back."""
        try:
            ws = self._connect()
        except ComfyServerError:
            ws = None
        started = None if ws is not None else time.monotonic()
        last_poll = time.monotonic()  # the first look at the history after 2 s: events come first
        finished = None  # when the events said the prompt ended
        while True:
            now = time.monotonic()
            if stop is not None and stop.is_set():
                raise Stopped(f"stopped waiting for prompt {prompt_id}")
            if timeout is not None and started is not None and now - started > timeout:
                raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:g} s of starting to run")
            if self.server is not None:
                self.server.check()
            # The history is the truth; events only make waiting prompt (and report progress).
            if finished is not None or now - last_poll > 2.0:
                last_poll = now
                entry = self.history(prompt_id)
                if entry is not None and _entry_done(entry):
                    if ws is not None and on_event is not None:
                        self._drain(ws, prompt_id, on_event)  # events still in flight, in order
                    _raise_for_status(entry)
                    return entry
                if finished is not None:
                    # The worker stores the history just after the last event.
                    if now - finished > 60:
                        raise ComfyServerError(f"prompt {prompt_id} ended but ComfyUI kept no history of it")
                    time.sleep(0.05)
                    continue
            if ws is None:
                time.sleep(0.25)
                continue
            try:
                text = ws.receive(timeout=0.2)
            except (ConnectionError, OSError):
                self.close()
                ws = None
                if started is None:
                    started = time.monotonic()  # its start can no longer be seen: count from now
                continue
            event = _prompt_event(text, prompt_id)
            if event is None:
                continue
            kind, data = event
            if kind == "execution_start" and started is None:
                started = time.monotonic()
            if on_event is not None:
                on_event(kind, data)
            if kind == "execution_error":
                raise WorkflowError(
                    data.get("exception_message") or "execution failed",
                    data.get("node_id"),
                    data.get("node_type"),
                    data,
                )
            if kind == "execution_interrupted":
                raise WorkflowError("interrupted", data.get("node_id"), data.get("node_type"), data)
            ended = kind == "execution_success" or (kind == "executing" and data.get("node") is None)
            if ended and data.get("prompt_id") == prompt_id and finished is None:
                finished = time.monotonic()

    @staticmethod
    def _drain(ws, prompt_id, on_event):
        for _ in range(10000):
            try:
                text = ws.receive(timeout=0.05)
            except (ConnectionError, OSError):
                return
            if text is None:
                return
            event = _prompt_event(text, prompt_id)
            if event is not None:
                on_event(*event)

    def run(self, prompt: dict, on_event=None, timeout=None) -> dict:
        return self.wait(self.queue(prompt), on_event=on_event, timeout=timeout)

    def images(self, history_entry: dict) -> list[dict]:
        """Every image an output node reported: [{node_id, filename, subfolder, type}]."""
        found = []
        for node_id, output in (history_entry.get("outputs") or {}).items():
            for image in output.get("images") or []:
                if isinstance(image, dict) and "filename" in image:
                    found.append(
                        {
                            "node_id": node_id,
                            "filename": image["filename"],
                            "subfolder": image.get("subfolder", ""),
                            "type": image.get("type", "output"),
                        }
                    )
        return found

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        return self._request("GET", "/view?" + query)

    def interrupt(self) -> None:
        self._request("POST", "/interrupt", {})

    def free(self) -> None:
        self._request("POST", "/free", {"unload_models": True, "free_memory": True})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _prompt_event(text: str | None, prompt_id: str) -> tuple[str, object] | None:
    """(type, data) of a WebSocket message that concerns `prompt_id` (or no prompt in particular);
    None for another prompt's event, an unreadable message or no message."""
    if text is None:
        return None
    try:
        message = json.loads(text)
    except ValueError:
        return None
    data = message.get("data") or {}
    if isinstance(data, dict) and data.get("prompt_id") not in (None, prompt_id):
        return None
    return message.get("type"), data


def _entry_done(entry: dict) -> bool:
    status = entry.get("status") or {}
    return bool(status.get("completed")) or status.get("status_str") in ("success", "error")


def _raise_for_status(entry: dict):
    status = entry.get("status") or {}
    if status.get("status_str") != "error" and status.get("completed", True):
        return
    for kind, data in status.get("messages") or []:
        if kind in ("execution_error", "execution_interrupted"):
            raise WorkflowError(
                data.get("exception_message") or kind.replace("execution_", ""),
                data.get("node_id"),
                data.get("node_type"),
                data,
            )
    raise WorkflowError("execution failed without an error message", details=status)


def _validation_error(answer: dict, prompt: dict) -> WorkflowError:
    for node_id, info in (answer.get("node_errors") or {}).items():
        messages = "; ".join(f"{e.get('message')}: {e.get('details')}" for e in info.get("errors", []))
        node_type = info.get("class_type") or (prompt.get(node_id) or {}).get("class_type")
        return WorkflowError(f"validation failed: {messages}", node_id, node_type, answer)
    error = answer.get("error") or {}
    if isinstance(error, str):
        return WorkflowError(f"validation failed: {error}", details=answer)
    node_id = (error.get("extra_info") or {}).get("node_id")
    node_type = (prompt.get(node_id) or {}).get("class_type") if node_id is not None else None
    return WorkflowError(
        f"validation failed: {error.get('message')}: {error.get('details')}", node_id, node_type, answer
    )

"""Host harness: finds a ComfyUI checkout; boots it in-process on the CPU with the pack loaded
through ComfyUI's own custom-node loader (node-level tests), and starts that checkout's own server
once per session, on a free loopback port with the pack installed, for graph runs (`host.run`).

Without a host, tests marked `host` are skipped and the reason is printed in the run's header.
With ZIMAGE_REQUIRE_HOST=1 (tools/test.sh sets it when it found a checkout) a missing host fails
the run instead: host tests never pass by being skipped."""

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from zimage_nodes.tools import comfy_server as cs
from zimage_nodes.tools import headless

COMFYUI, HOW = headless.find_comfyui()
MODEL_KINDS = ("diffusion_models", "text_encoders", "vae", "checkpoints", "loras")
PROBE = Path(__file__).resolve().parent / "server_probe"
REQUIRE_HOST = os.environ.get("ZIMAGE_REQUIRE_HOST") == "1"
RUNNER = headless.PACK_DIR / "tools" / "run_workflow.py"
_SERVER_STATS: dict = {}


def _runner(args) -> dict:
    """tools/run_workflow.py as a user starts it from the pack folder, progress bars off, without
    COMFYUI_PATH: each test's own --comfyui / --server choose the host."""
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    command = [sys.executable, str(RUNNER), *args, "--no-progress"]
    return dict(args=command, cwd=headless.PACK_DIR, env=env, text=True)


def run_workflow_cli(*args, timeout=600) -> subprocess.CompletedProcess:
    """The runner run to its end, its output captured."""
    return subprocess.run(**_runner(args), capture_output=True, timeout=timeout)


def start_workflow_cli(*args) -> subprocess.Popen:
    """The runner started in the background (to be stopped or interrupted), its output piped."""
    return subprocess.Popen(**_runner(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def pytest_report_header(config):
    if COMFYUI is None:
        return f"ComfyUI host: none, host tests will be skipped ({HOW})"
    return f"ComfyUI host: {COMFYUI} v{cs.comfyui_version(COMFYUI)} ({HOW})"


def pytest_collection_modifyitems(config, items):
    if COMFYUI is not None:
        return
    if REQUIRE_HOST:
        raise pytest.UsageError(f"ZIMAGE_REQUIRE_HOST=1 but {HOW}")
    skip = pytest.mark.skip(reason=f"needs a ComfyUI checkout: {HOW}")
    for item in items:
        if "host" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if _SERVER_STATS:
        terminalreporter.write_line(
            "ComfyUI server v{version}: started in {startup:.1f} s, {runs} graph run(s)".format(**_SERVER_STATS)
        )
    if REQUIRE_HOST:
        # A host was given: any skipped host test is a failure of the run (checked here, where
        # every report is known; the session's exit status is set in pytest_sessionfinish).
        skipped = [r for r in terminalreporter.stats.get("skipped", []) if "host" in r.keywords]
        if skipped:
            terminalreporter.write_line(f"FAILED: {len(skipped)} host test(s) skipped with a host given:", red=True)
            for r in skipped:
                terminalreporter.write_line(f"  {r.nodeid}: {r.longrepr[-1] if r.longrepr else ''}")


def pytest_sessionfinish(session, exitstatus):
    if not REQUIRE_HOST or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and any("host" in r.keywords for r in reporter.stats.get("skipped", [])):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def host(tmp_path_factory):
    if COMFYUI is None:
        pytest.skip(f"needs a ComfyUI checkout: {HOW}")
    out = tmp_path_factory.mktemp("comfy_output")
    # API nodes too: they are core ComfyUI, and the pack's node ids must not clash with them either.
    booted = headless.boot(COMFYUI, cpu=True, output_dir=out, api_nodes=True)
    booted.use_server(lambda: _server_client(tmp_path_factory, booted))
    yield booted
    _stop_server()


@pytest.fixture(scope="session")
def models_root(host, tmp_path_factory):
    """The session's model folders, registered in this process and in the server: files written
    into them later are seen by both (ComfyUI re-lists a folder when it changes)."""
    root = _models_root(tmp_path_factory)
    for kind in MODEL_KINDS:
        host.add_model_folder(kind, root / kind)
    return root


@pytest.fixture(scope="session")
def demo_models(host, models_root):
    """Tiny random-weight Z-Image files (real key layouts) in the session's model folders."""
    from zimage_nodes.tools import demo_weights

    names = demo_weights.write_demo_models(models_root)
    return models_root, names


@pytest.fixture(scope="session")
def comfy_server(host, models_root):
    """The session's ComfyUI server (the checkout's own main.py), started on first use."""
    _server_client(None, host)
    return _STATE["server"]


@pytest.fixture(scope="session")
def comfy_client(comfy_server):
    return _STATE["client"]


@pytest.fixture
def forward_spy(host):
    """Records the batch size of every Z-Image DiT forward (ComfyUI's NextDiT) in this process."""
    from zimage_nodes.tools.forward_spy import ForwardSpy

    with ForwardSpy() as spy:
        yield spy.batches


class ServerForwardCalls(Sequence):
    """The batch sizes of every NextDiT forward inside the test server since the fixture began,
    read from the server probe each time it is looked at."""

    def __init__(self, client):
        self.client = client

    def _batches(self) -> list:
        return self.client.request_json("GET", "/zimage_test_probe/forward_spy")["batches"]

    def __getitem__(self, index):
        return self._batches()[index]

    def __len__(self):
        return len(self._batches())

    def __eq__(self, other):
        return self._batches() == list(other)

    def __repr__(self):
        return repr(self._batches())

    def clear(self):
        self.client.request_json("POST", "/zimage_test_probe/forward_spy/start", {})


@pytest.fixture
def server_forward_spy(comfy_client):
    """Like forward_spy, for graphs run on the session's server (`host.run`)."""
    calls = ServerForwardCalls(comfy_client)
    calls.clear()
    yield calls
    comfy_client.request_json("POST", "/zimage_test_probe/forward_spy/stop", {})


@pytest.fixture(scope="session")
def pack(host):
    """The pack's root package as ComfyUI loaded it (the same module objects the graph uses):
    pack.nodes, pack.host.batched_cfg, pack.model.zimage_nag, ..."""
    import importlib

    for sub in ("nodes", "host.batched_cfg", "host.cfg_guider", "host.nag_patch", "model.zimage_nag", "model.skeleton"):
        importlib.import_module(f"{host.pack.__name__}.{sub}")
    return host.pack


@pytest.fixture(scope="session")
def pack_nodes(pack):
    """The pack's `nodes` package as ComfyUI loaded it."""
    return pack.nodes


# -- the session's server ----------------------------------------------------------------------

_STATE: dict = {}


def _models_root(tmp_path_factory) -> Path:
    if "models" not in _STATE:
        root = tmp_path_factory.mktemp("models")
        for kind in MODEL_KINDS:
            (root / kind).mkdir(exist_ok=True)
        _STATE["models"] = root
        _STATE["factory"] = tmp_path_factory
    return _STATE["models"]


def _server_client(tmp_path_factory, host):
    if "client" in _STATE:
        _STATE["server"].check()
        return _STATE["client"]
    root = _models_root(tmp_path_factory or _STATE["factory"])
    for kind in MODEL_KINDS:
        if str(root / kind) not in host.folder_paths.get_folder_paths(kind):
            host.add_model_folder(kind, root / kind)
    log = (tmp_path_factory or _STATE["factory"]).getbasetemp() / "comfyui-server.log"
    server = cs.ComfyServer(
        COMFYUI,
        python=sys.executable,
        model_folders={kind: [root / kind] for kind in MODEL_KINDS},
        output_dir=host.folder_paths.get_output_directory(),
        cpu=True,
        log_path=log,
        extra_custom_nodes=[PROBE],
        # Every graph executes every node, whatever ran before it in the session: a test sees its
        # own graph's results (node texts, forward counts), never a cached node's.
        extra_args=["--cache-none"],
    )
    began = time.monotonic()
    server.start(timeout=300)
    _STATE["server"] = server
    _STATE["client"] = _CountingClient(server.url, server=server)
    _SERVER_STATS.update(version=server.version, startup=time.monotonic() - began, runs=0)
    return _STATE["client"]


class _CountingClient(cs.ComfyClient):
    def run(self, prompt, on_event=None, timeout=None):
        _SERVER_STATS["runs"] = _SERVER_STATS.get("runs", 0) + 1
        # A bound on every graph of the suite: tiny models on the CPU take seconds.
        return super().run(prompt, on_event=on_event, timeout=timeout or 600)


def _stop_server():
    server = _STATE.pop("server", None)
    client = _STATE.pop("client", None)
    if client is not None:
        client.close()
    if server is not None:
        server.stop()

"""tools/comfy_server.py against the real server of the checkout under test: graphs queue, report
progress and hand back their images; failures name the node; a server that cannot start, or whose
parent dies, leaves no process behind and nothing in the user's checkout."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from demo_prompts import turbo_prompt

from zimage_nodes.tools import comfy_server as cs

pytestmark = pytest.mark.host

PNG = b"\x89PNG\r\n\x1a\n"


def test_a_graph_runs_with_progress_events_and_its_image_comes_back(comfy_server, comfy_client, demo_models):
    _, names = demo_models
    assert comfy_server.url.startswith("http://127.0.0.1:")
    assert names["turbo"] in comfy_client.models("diffusion_models")
    events = []
    entry = comfy_client.run(turbo_prompt(names, steps=3), on_event=lambda kind, data: events.append((kind, data)))
    steps = [d for k, d in events if k == "progress" and str(d.get("node")) == "4"]
    # Every step on v0.8.0; newer hosts throttle to 10 updates a second but always send the first
    # and the final one (comfy.utils.ProgressBar).
    values = [d["value"] for d in steps]
    assert values[0] == 1 and values[-1] == 3 and values == sorted(set(values)) and steps[-1]["max"] == 3
    assert any(k == "executing" and d.get("node") == "4" for k, d in events)
    (image,) = comfy_client.images(entry)
    assert image["node_id"] == "6" and image["type"] == "output"
    data = comfy_client.view(image["filename"], image["subfolder"], image["type"])
    assert data[:8] == PNG
    assert (comfy_server.output_directory / image["subfolder"] / image["filename"]).read_bytes() == data


def test_an_invalid_prompt_is_refused_naming_the_node(comfy_client):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "never"}},
    }
    with pytest.raises(cs.WorkflowError) as err:
        comfy_client.queue(prompt)
    assert err.value.node_id == "1" and err.value.node_type == "EmptyImage"
    assert "width" in str(err.value) and str(err.value).startswith("node 1 (EmptyImage)")


def test_an_unknown_node_type_is_refused(comfy_client):
    with pytest.raises(cs.WorkflowError) as err:
        comfy_client.queue({"1": {"class_type": "NoSuchNodeAnywhere", "inputs": {}}})
    assert "NoSuchNodeAnywhere" in str(err.value)


def test_a_server_that_cannot_start_raises_with_its_log_tail(host):
    from comfy_host import COMFYUI

    server = cs.ComfyServer(COMFYUI, extra_args=["--no-such-flag"])
    with pytest.raises(cs.ComfyServerError) as err:
        server.start(timeout=120)
    assert "exited with status" in str(err.value)
    assert "--no-such-flag" in str(err.value)  # argparse's complaint, from the log tail
    assert not server.alive() and server._tmp is None


def _snapshot(checkout: Path) -> set:
    """What a server could leave in the checkout: entries of its data and custom-node folders."""
    found = {p.name for p in checkout.iterdir()}
    for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
        if (checkout / sub).is_dir():
            found |= {f"{sub}/{p.name}" for p in (checkout / sub).iterdir() if p.name != "__pycache__"}
    return found


def test_a_dead_parent_takes_its_server_along_and_the_checkout_is_untouched(host, tmp_path):
    from comfy_host import COMFYUI

    before = _snapshot(COMFYUI)
    script = textwrap.dedent(f"""
        import json, sys, time
        sys.path.append({str(Path(cs.__file__).resolve().parent / "site")!r})
        from zimage_nodes.tools import comfy_server as cs
        server = cs.ComfyServer({str(COMFYUI)!r}).start(timeout=300)
        print(json.dumps({{"pid": server._proc.pid, "url": server.url, "tmp": str(server._tmp)}}), flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        assert line, "the parent process printed nothing (server failed to start?)"
        started = json.loads(line)
        client = cs.ComfyClient(started["url"], timeout=10)
        assert client.system_stats()["system"]["comfyui_version"] == host.version
    finally:
        parent.send_signal(signal.SIGKILL)  # no atexit, no cleanup: the kernel must end the server
        parent.wait(timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _running(started["pid"]):
        time.sleep(0.5)
    assert not _running(started["pid"]), "the server outlived the process that started it"
    with pytest.raises(cs.ComfyServerError):
        client.system_stats()
    shutil.rmtree(started["tmp"], ignore_errors=True)
    assert _snapshot(COMFYUI) <= before, sorted(_snapshot(COMFYUI) - before)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False

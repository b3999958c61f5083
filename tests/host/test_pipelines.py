"""The runner as a pipeline, against two real ComfyUI servers on loopback (the checkout's own
main.py, the pack installed, the session's demo weights): a CSV job spread over both, a server
stopped mid-job, --resume, a bad row failing alone, Ctrl-C, the server checks and the model-file
hint, and conversion with a server's /object_info matching conversion with the host's classes."""

import csv
import json
import signal
import time
from pathlib import Path

import pytest
from comfy_host import run_workflow_cli, start_workflow_cli

from zimage_nodes.tools import comfy_server as cs
from zimage_nodes.tools import pipeline as pl
from zimage_nodes.tools import workflow_convert as wc

pytestmark = pytest.mark.host

PACK_DIR = Path(__file__).resolve().parents[2]
TURBO = PACK_DIR / "example_workflows" / "z_image_turbo_text_to_image.json"
PNG = b"\x89PNG\r\n\x1a\n"
SMALL = ["EmptySD3LatentImage.width=64", "EmptySD3LatentImage.height=64", "Z-Image Turbo Sampler.steps=2"]
HINT = "model files this workflow names"


def start_server(models_root, tmp_path_factory, name):
    from comfy_host import COMFYUI

    server = cs.ComfyServer(
        COMFYUI,
        model_folders={kind: [models_root / kind] for kind in ("diffusion_models", "text_encoders", "vae")},
        cpu=True,
        log_path=tmp_path_factory.getbasetemp() / f"pipeline-{name}.log",
    )
    return server.start(timeout=300)


@pytest.fixture(scope="module")
def servers(demo_models, tmp_path_factory):
    root, _ = demo_models
    started = [start_server(root, tmp_path_factory, f"s{i}") for i in (1, 2)]
    yield started
    for server in started:
        server.stop()


def server_args(servers):
    return [a for s in servers for a in ("--server", s.url)]


def set_args(values):
    return [a for v in values for a in ("--set", v)]


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def history_count(server):
    return len(cs.ComfyClient(server.url).request_json("GET", "/history"))


SIX_ROWS = [{"Positive.text": f"a lighthouse, variation {i}", "seed": 100 + 10 * i} for i in range(6)]


def test_csv_job_runs_across_both_servers_then_resume_queues_nothing(servers, tmp_path):
    prompts = write_csv(tmp_path / "prompts.csv", SIX_ROWS)
    out = tmp_path / "out"
    args = [str(TURBO), "--demo-weights", "--prompts", str(prompts), "--count", "2", "--output", str(out)]
    proc = run_workflow_cli(*args, *server_args(servers), *set_args(SMALL))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    records = manifest(out)
    assert len(records) == 12 and {r["status"] for r in records} == {"done"}
    assert {r["server"] for r in records} == {s.url for s in servers}  # both servers did work
    assert sorted((r["row"], r["seed"]) for r in records) == sorted(
        (i + 1, 100 + 10 * i + k) for i in range(6) for k in range(2)
    )
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 12 and all(p.read_bytes()[:8] == PNG for p in pngs)
    import hashlib

    for r in records:
        (f,) = r["files"]
        assert f["path"] == f"row{r['row']:04d}_seed{r['seed']}.png"
        assert hashlib.sha256((out / f["path"]).read_bytes()).hexdigest() == f["sha256"]
        assert r["overrides"]["Positive.text"] == SIX_ROWS[r["row"] - 1]["Positive.text"]
        assert r["seconds"] > 0
    assert "images / minute" in proc.stdout and "done on " + servers[1].url in proc.stdout

    before = [history_count(s) for s in servers]
    again = run_workflow_cli(*args, "--resume", *server_args(servers), *set_args(SMALL))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resume: 12 of 12 item(s) already done" in again.stdout
    assert [history_count(s) for s in servers] == before  # nothing was queued
    assert len(manifest(out)) == 12 and len(list(out.glob("*.png"))) == 12


def test_a_bad_row_fails_alone_with_its_node_named(servers, tmp_path):
    rows = [
        {"Positive.text": "a cat", "Z-Image Turbo Sampler.sampler_name": "euler"},
        {"Positive.text": "a dog", "Z-Image Turbo Sampler.sampler_name": "no_such_sampler"},
        {"Positive.text": "a bird", "Z-Image Turbo Sampler.sampler_name": "euler"},
    ]
    prompts = write_csv(tmp_path / "prompts.csv", rows)
    out = tmp_path / "out"
    proc = run_workflow_cli(
        str(TURBO), "--demo-weights", "--prompts", str(prompts), "--output", str(out),
        *server_args(servers), *set_args(SMALL),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    by_row = {r["row"]: r for r in manifest(out)}
    assert by_row[1]["status"] == by_row[3]["status"] == "done"
    bad = by_row[2]
    assert bad["status"] == "failed" and bad["node_id"] == "5" and bad["node_type"] == "ZINodesTurboSampler"
    assert "sampler_name" in bad["error"] and not bad.get("files")
    assert len(list(out.glob("*.png"))) == 2
    assert "node 5 (ZINodesTurboSampler)" in proc.stderr
    # Issue 12: the model-file hint is about model files only, not a bad sampler name.
    assert HINT not in proc.stderr + proc.stdout


def test_a_server_without_the_files_is_refused_with_the_hint(servers, tmp_path):
    proc = run_workflow_cli(str(TURBO), "--output", str(tmp_path), "--server", servers[0].url)  # real file names
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"server {servers[0].url} refused" in proc.stderr
    assert "model file missing: diffusion_models/z_image_turbo_bf16.safetensors" in proc.stderr
    assert HINT in proc.stderr and "--demo-weights" in proc.stderr
    assert not list(tmp_path.glob("*.png"))


def test_an_unreachable_server_is_refused(servers, tmp_path):
    dead = f"http://127.0.0.1:{cs.free_port()}"
    proc = run_workflow_cli(str(TURBO), "--demo-weights", "--output", str(tmp_path), "--server", dead, *set_args(SMALL))
    assert proc.returncode == 2 and dead in proc.stderr and "not reachable" in proc.stderr


def test_validate_only_queues_nothing(servers, tmp_path):
    before = history_count(servers[0])
    ok = run_workflow_cli(str(TURBO), "--demo-weights", "--validate-only", "--server", servers[0].url)
    assert ok.returncode == 0 and "valid: 6 nodes, output nodes 7" in ok.stdout, ok.stdout + ok.stderr
    bad = run_workflow_cli(
        str(TURBO), "--demo-weights", "--validate-only", "--server", servers[0].url, "--set", "4.width=7"
    )
    assert bad.returncode == 1 and "node 4 (EmptySD3LatentImage)" in bad.stderr and "width" in bad.stderr
    time.sleep(1)
    assert history_count(servers[0]) == before
    queue = cs.ComfyClient(servers[0].url).request_json("GET", "/queue")
    assert not queue["queue_running"] and not queue["queue_pending"]


def test_object_info_conversion_matches_the_host_classes(host, servers):
    remote = pl.ObjectInfoDefinitions(cs.ComfyClient(servers[0].url).object_info())
    local = wc.HostDefinitions(host.comfy_nodes)
    for path in sorted((PACK_DIR / "example_workflows").glob("*.json")):
        data = json.loads(path.read_text())
        assert wc.load_prompt(data, remote) == wc.load_prompt(data, local), path.name
        for node in data["nodes"]:
            if node["type"] not in wc.VIRTUAL_TYPES:
                assert wc.widget_value_count(remote.input_types(node["type"])) == len(node["widgets_values"])
    for class_type in ("ZINodesLoader", "ZINodesTurboSampler", "ZINodesCFGGuider", "SaveImage"):
        assert remote.outputs(class_type) == local.outputs(class_type)


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_stopping_a_server_mid_job_hands_its_items_to_the_other(demo_models, servers, tmp_path, tmp_path_factory):
    root, _ = demo_models
    doomed = start_server(root, tmp_path_factory, "doomed")
    try:
        prompts = write_csv(tmp_path / "prompts.csv", SIX_ROWS)
        out = tmp_path / "out"
        job = start_workflow_cli(
            str(TURBO), "--demo-weights", "--prompts", str(prompts), "--count", "2",
            "--output", str(out), "--server", servers[0].url, "--server", doomed.url, *set_args(SMALL),
        )  # fmt: skip
        try:
            # Stop it once it has finished an item (so it had work) while the job is far from done.
            wait_for(
                lambda: (
                    (out / "manifest.jsonl").is_file()
                    and any(r["server"] == doomed.url for r in manifest(out))
                    or job.poll() is not None
                ),
                300,
                "an item done on the server to be stopped",
            )
            doomed.stop()
            stdout, stderr = job.communicate(timeout=600)
        finally:
            if job.poll() is None:
                job.kill()
        assert job.returncode == 0, stdout + stderr
        records = manifest(out)
        assert len(records) == 12 and {r["status"] for r in records} == {"done"}
        assert len({(r["row"], r["seed"]) for r in records}) == 12
        assert {r["server"] for r in records} == {servers[0].url, doomed.url}
        assert len(list(out.glob("*.png"))) == 12
    finally:
        doomed.stop()


def queues_idle(servers):
    return not any(
        q["queue_running"] or q["queue_pending"]
        for q in (cs.ComfyClient(s.url).request_json("GET", "/queue") for s in servers)
    )


def test_an_item_past_its_timeout_fails_and_is_taken_back(servers, tmp_path):
    out = tmp_path / "out"
    # Far past 3 s on any machine: 100 steps over 4096 image tokens (at 128x128 an idle machine
    # finished inside the timeout).
    slow = ["Z-Image Turbo Sampler.steps=100", "EmptySD3LatentImage.width=1024", "EmptySD3LatentImage.height=1024"]
    proc = run_workflow_cli(
        str(TURBO), "--demo-weights", "--output", str(out), "--server", servers[0].url, "--timeout", "3",
        *set_args(slow),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (record,) = manifest(out)
    assert record["status"] == "failed" and "did not finish within 3 s" in record["error"]
    wait_for(lambda: queues_idle(servers[:1]), 30, "the server idle after the timeout")


def test_ctrl_c_interrupts_every_server_and_leaves_a_consistent_manifest(servers, tmp_path):
    rows = [{"Positive.text": f"a boat {i}"} for i in range(4)]
    prompts = write_csv(tmp_path / "prompts.csv", rows)
    out = tmp_path / "out"
    # Larger images and more steps: items long enough to be caught in flight.
    job = start_workflow_cli(
        str(TURBO), "--demo-weights", "--prompts", str(prompts), "--count", "2",
        "--output", str(out), *server_args(servers),
        "--set", "Z-Image Turbo Sampler.steps=30", "--set", "EmptySD3LatentImage.width=128",
        "--set", "EmptySD3LatentImage.height=128",
    )  # fmt: skip
    try:

        def running():
            return any(cs.ComfyClient(s.url).request_json("GET", "/queue")["queue_running"] for s in servers)

        wait_for(running, 120, "a prompt running")
        job.send_signal(signal.SIGINT)
        stdout, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 130, stdout + stderr
    records = manifest(out) if (out / "manifest.jsonl").is_file() else []
    assert all(r["status"] in ("done", "interrupted", "failed") for r in records)
    assert len({r["key"] for r in records}) == len(records) <= 8
    for r in records:
        for f in r.get("files") or []:
            assert (out / f["path"]).is_file()
    wait_for(lambda: queues_idle(servers), 30, "both servers idle after Ctrl-C")
    assert not list(out.glob(".*.part"))

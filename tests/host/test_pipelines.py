"""The runner as a pipeline, against two real ComfyUI servers on loopback (the checkout's own
main.py, the pack installed, the session's demo weights): a CSV job spread over both, --resume, a
bad row failing alone, the server checks and the model-file hint, and conversion with a server's
/object_info matching conversion with the host's classes.

Then every way a job can go wrong, each ending in one clear line and an exit status, never a hang:
paths that cannot be written and empty prompts files (refused before any work), a manifest that
fails mid-job, Ctrl-C (once and twice) with items running and queued on both servers, a server
killed mid-job, and --timeout (counted from when an item starts running, not while it waits). Those
jobs run a graph of the tests' hold node (tests/hold_node): it holds an item running until the test
releases it, so the moments are caught by condition, without computing anything."""

import csv
import json
import os
import signal
import time
import uuid
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
HOLD_NODE = PACK_DIR / "tests" / "hold_node"


def start_server(models_root, tmp_path_factory, name):
    from comfy_host import COMFYUI

    server = cs.ComfyServer(
        COMFYUI,
        model_folders={kind: [models_root / kind] for kind in ("diffusion_models", "text_encoders", "vae")},
        cpu=True,
        log_path=tmp_path_factory.getbasetemp() / f"pipeline-{name}.log",
        extra_custom_nodes=[HOLD_NODE],
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


THREE_ROWS = [{"Positive.text": f"a lighthouse, variation {i}", "seed": 100 + 10 * i} for i in range(3)]


def test_csv_job_runs_across_both_servers_then_resume_queues_nothing(servers, tmp_path):
    prompts = write_csv(tmp_path / "prompts.csv", THREE_ROWS)
    out = tmp_path / "out"
    args = [str(TURBO), "--demo-weights", "--prompts", str(prompts), "--count", "2", "--output", str(out)]
    proc = run_workflow_cli(*args, *server_args(servers), *set_args(SMALL))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    records = manifest(out)
    assert len(records) == 6 and {r["status"] for r in records} == {"done"}
    assert {r["server"] for r in records} == {s.url for s in servers}  # both servers did work
    assert sorted((r["row"], r["seed"]) for r in records) == sorted(
        (i + 1, 100 + 10 * i + k) for i in range(3) for k in range(2)
    )
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 6 and all(p.read_bytes()[:8] == PNG for p in pngs)
    import hashlib

    for r in records:
        (f,) = r["files"]
        assert f["path"] == f"row{r['row']:04d}_seed{r['seed']}.png"
        assert hashlib.sha256((out / f["path"]).read_bytes()).hexdigest() == f["sha256"]
        assert r["overrides"]["Positive.text"] == THREE_ROWS[r["row"] - 1]["Positive.text"]
        assert r["seconds"] > 0
    assert "images / minute" in proc.stdout and "done on " + servers[1].url in proc.stdout

    before = [history_count(s) for s in servers]
    again = run_workflow_cli(*args, "--resume", *server_args(servers), *set_args(SMALL))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resume: 6 of 6 item(s) already done" in again.stdout
    assert [history_count(s) for s in servers] == before  # nothing was queued
    assert len(manifest(out)) == 6 and len(list(out.glob("*.png"))) == 6


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
    # One line per failed item in the summary, the node named once (issue 19).
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("failed: ")]
    assert line.startswith(f"failed: row 2 seed 42 on {bad['server']}: node 5 (ZINodesTurboSampler): validation failed")
    assert line.count("node 5") == 1
    # Issue 12: the model-file hint is about model files only, not a bad sampler name.
    assert HINT not in proc.stderr + proc.stdout


def test_a_server_without_the_files_is_refused_with_the_hint(servers, tmp_path):
    proc = run_workflow_cli(str(TURBO), "--output", str(tmp_path), "--server", servers[0].url)  # real file names
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"server {servers[0].url} refused" in proc.stderr
    assert "model file missing: diffusion_models/z_image_turbo_bf16.safetensors" in proc.stderr
    assert HINT in proc.stderr and "--demo-weights" in proc.stderr
    assert not list(tmp_path.glob("*.png"))


def test_the_hint_for_another_loaders_checkpoint_does_not_offer_demo_weights(servers, tmp_path):
    sd = PACK_DIR / "example_workflows" / "sd_negative_prompt_cfg.json"
    proc = run_workflow_cli(str(sd), "--output", str(tmp_path), "--server", servers[0].url)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "model file missing: checkpoints/v1-5-pruned-emaonly-fp16.safetensors" in proc.stderr
    assert HINT in proc.stderr and "--demo-weights" not in proc.stderr  # it would refuse that checkpoint


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


def test_save_api_with_demo_weights_keeps_the_workflows_own_files(servers, tmp_path):
    api = tmp_path / "api.json"
    proc = run_workflow_cli(
        str(TURBO), "--demo-weights", "--validate-only", "--save-api", str(api), "--server", servers[0].url
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (loader,) = [e for e in json.loads(api.read_text()).values() if e["class_type"] == "ZINodesLoader"]
    assert loader["inputs"]["diffusion_model"] == "z_image_turbo_bf16.safetensors"  # not the demo file
    assert "(ZINodesLoader): 'z_image_turbo_bf16.safetensors' -> demo turbo model" in proc.stdout


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


def first_line(text):
    return next((line for line in text.splitlines() if line.strip()), "")


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- refused before any work ---------------------------------------------------------------------

DEAD = "http://127.0.0.1:9"  # never asked: these are refused before a server is


def _unwritable_folder(tmp_path):
    if os.geteuid() == 0:  # root writes through any mode bits; sysfs refuses it a new folder
        return Path("/sys/zinodes-test-" + uuid.uuid4().hex[:8])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked


@pytest.mark.parametrize(
    "case, expected",
    [
        ("output is a file", "error: --output {p} is a file, not a folder; give --output a folder"),
        ("output under a file", "error: --output {p} is under {f}, which is a file; give --output a folder path"),
        ("output unwritable", "error: --output {p} cannot be written ("),
        ("manifest under a file", "error: --manifest {p} is under {f}, which is a file; give --manifest a file path"),
        ("save-api under a file", "error: --save-api {p} is under {f}, which is a file; give --save-api a file path"),
    ],
    ids=lambda v: v.replace(" ", "_") if not v.startswith("error") else "",
)
def test_paths_that_cannot_be_written_are_refused_before_any_server(tmp_path, case, expected):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine\n")
    option, path = {
        "output is a file": ("--output", a_file),
        "output under a file": ("--output", a_file / "out"),
        "output unwritable": ("--output", _unwritable_folder(tmp_path)),
        "manifest under a file": ("--manifest", a_file / "manifest.jsonl"),
        "save-api under a file": ("--save-api", a_file / "prompt.json"),
    }[case]
    extra = [] if option == "--output" else ["--output", str(tmp_path / "out")]
    began = time.monotonic()
    proc = run_workflow_cli(str(TURBO), option, str(path), *extra, "--server", DEAD, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert first_line(proc.stderr).startswith(expected.format(p=path, f=a_file)), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert a_file.read_text() == "mine\n" and not proc.stdout.strip()
    print(f"{case}: exit {proc.returncode}, {time.monotonic() - began:.1f} s: {first_line(proc.stderr)}")


def test_an_unwritable_output_is_refused_before_the_embedded_server_starts(tmp_path):
    from comfy_host import COMFYUI

    a_file = tmp_path / "a_file"
    a_file.write_text("mine\n")
    proc = run_workflow_cli(str(TURBO), "--comfyui", str(COMFYUI), "--output", str(a_file), timeout=60)
    assert proc.returncode == 2 and "embedded server" not in proc.stdout, proc.stdout + proc.stderr
    assert first_line(proc.stderr) == f"error: --output {a_file} is a file, not a folder; give --output a folder"


@pytest.mark.parametrize(
    "name, text", [("prompts.txt", "\n# only a comment\n"), ("prompts.csv", "Positive.text,seed\n")], ids=["txt", "csv"]
)
def test_an_empty_prompts_file_is_refused(tmp_path, name, text):
    prompts = tmp_path / name
    prompts.write_text(text)
    proc = run_workflow_cli(str(TURBO), "--prompts", str(prompts), "--output", str(tmp_path / "o"), "--server", DEAD)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = first_line(proc.stderr)
    assert line.startswith(f"error: the prompts file {prompts} has no ") and line.endswith(
        "; add at least one, or leave out --prompts"
    )
    assert len(proc.stderr.strip().splitlines()) == 1
    print(f"{name}: exit {proc.returncode}: {line}")


# -- jobs of the hold node -----------------------------------------------------------------------


def hold_workflow(tmp_path, hold=True):
    """An API-format workflow: the hold node (seeded: --count makes distinct items) into Save Image."""
    prompt = {
        "1": {"class_type": "ZImageTestHold", "inputs": {"seed": 1, "hold": hold}, "_meta": {"title": "Hold"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "hold"}},
    }
    path = tmp_path / f"hold_{hold}.json"
    path.write_text(json.dumps(prompt))
    return path


def hold_state(server):
    return cs.ComfyClient(server.url, timeout=5).request_json("GET", "/zimage_test_hold")


def pending(server):
    return len(cs.ComfyClient(server.url, timeout=5).request_json("GET", "/queue")["queue_pending"])


def idle(server):
    q = cs.ComfyClient(server.url, timeout=5).request_json("GET", "/queue")
    return not q["queue_running"] and not q["queue_pending"] and hold_state(server)["holding"] == 0


@pytest.fixture
def holds(servers):
    """Holds hold during the test; afterwards every server is released, then idle, and reset."""
    for s in servers:
        cs.ComfyClient(s.url).request_json("POST", "/zimage_test_hold/reset", {})
    yield servers
    for s in servers:
        cs.ComfyClient(s.url).request_json("POST", "/zimage_test_hold/release", {})
    for s in servers:
        wait_for(lambda s=s: idle(s), 30, f"{s.url} idle after the test")
        cs.ComfyClient(s.url).request_json("POST", "/zimage_test_hold/reset", {})


def finish(job, timeout):
    try:
        return job.communicate(timeout=timeout)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_with_items_running_and_queued_on_two_servers(holds, tmp_path, presses):
    out = tmp_path / "out"
    # Six items, two per server (one running, one queued behind it) and two not yet sent.
    job = start_workflow_cli(
        str(hold_workflow(tmp_path)), "--count", "6", "--output", str(out), *server_args(holds)
    )  # fmt: skip
    try:
        wait_for(
            lambda: all(hold_state(s)["holding"] == 1 and pending(s) == 1 for s in holds) or job.poll() is not None,
            120,
            "an item running and one queued on each server",
        )
        assert job.poll() is None
        began = time.monotonic()
        for _ in range(presses):
            job.send_signal(signal.SIGINT)
        stdout, stderr = finish(job, 30)
        took = time.monotonic() - began
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 130, stdout + stderr
    assert took < 2.0, f"exit {took:.2f} s after Ctrl-C"
    records = manifest(out)
    assert len(records) == 6 and len({r["key"] for r in records}) == 6  # one line per item
    assert {r["status"] for r in records} == {"interrupted"}
    assert "failed:" not in stderr and "interrupted: 6 item(s) not finished; run again with --resume" in stderr
    assert "Traceback" not in stderr
    for s in holds:  # the job's prompts were taken back: the running one interrupted, the queued deleted
        wait_for(lambda s=s: idle(s), 10, f"{s.url} idle after Ctrl-C")
    print(f"Ctrl-C x{presses}: exit {job.returncode} after {took:.2f} s; first line: {first_line(stderr)}")


def test_a_manifest_that_fails_mid_job_stops_it_with_one_line(holds, tmp_path):
    out = tmp_path / "out"
    began = time.monotonic()
    proc = run_workflow_cli(
        str(hold_workflow(tmp_path, hold=False)), "--count", "3", "--max-in-flight", "1",
        "--output", str(out), "--manifest", "/dev/full", "--server", holds[0].url, timeout=30,
    )  # fmt: skip
    took = time.monotonic() - began
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = first_line(proc.stderr)
    assert line.startswith("error: cannot write the manifest /dev/full (No space left on device)"), proc.stderr
    assert "error: the job stopped early: cannot write the manifest /dev/full" in proc.stderr
    assert "Traceback" not in proc.stderr
    print(f"manifest /dev/full: exit {proc.returncode} in {took:.1f} s: {line}")


def test_a_killed_server_is_named_and_its_items_finish_on_the_other(demo_models, holds, tmp_path, tmp_path_factory):
    root, _ = demo_models
    doomed = start_server(root, tmp_path_factory, "doomed")
    try:
        out = tmp_path / "out"
        job = start_workflow_cli(
            str(hold_workflow(tmp_path)), "--count", "4", "--max-in-flight", "1",
            "--output", str(out), "--server", holds[0].url, "--server", doomed.url,
        )  # fmt: skip
        try:
            wait_for(
                lambda: hold_state(doomed)["holding"] == 1 or job.poll() is not None,
                120,
                "an item on the doomed server",
            )
            os.killpg(doomed._proc.pid, signal.SIGKILL)
            doomed._proc.wait(10)
            cs.ComfyClient(holds[0].url).request_json("POST", "/zimage_test_hold/release", {})
            stdout, stderr = finish(job, 120)
        finally:
            if job.poll() is None:
                job.kill()
        assert job.returncode == 0, stdout + stderr
        records = manifest(out)
        assert len(records) == 4 and {r["status"] for r in records} == {"done"}
        assert {r["server"] for r in records} == {holds[0].url} and len({r["key"] for r in records}) == 4
        line = first_line(stderr)
        assert line.startswith(f"error: server {doomed.url} stopped answering (") and line.endswith(
            f"Connection refused); its items go to {holds[0].url}"
        )
        assert line.count(doomed.url) == 1
        assert f"server lost: {doomed.url} stopped answering" in stderr and "Traceback" not in stderr
        print(f"killed server: exit {job.returncode}; first line: {line}")
    finally:
        doomed.stop()


def test_an_item_past_its_timeout_fails_and_is_taken_back(holds, tmp_path):
    out = tmp_path / "out"
    proc = run_workflow_cli(
        str(hold_workflow(tmp_path)), "--output", str(out), "--server", holds[0].url, "--timeout", "2", timeout=60
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (record,) = manifest(out)
    assert record["status"] == "failed" and "did not finish within 2 s of starting to run" in record["error"]
    line = first_line(proc.stderr)
    assert line.startswith(f"row 1 seed 1: failed on {holds[0].url}: prompt ") and "--timeout" in line
    wait_for(lambda: idle(holds[0]), 10, "the server idle after the timeout")  # interrupted, not left running
    print(f"timeout: exit {proc.returncode}; first line: {line}")


def test_the_timeout_does_not_count_time_waiting_in_the_queue(holds, tmp_path):
    server = holds[0]
    # Someone else's prompt holds the server; the job's item waits behind it longer than --timeout.
    other = cs.ComfyClient(server.url)
    blocker = json.loads(hold_workflow(tmp_path).read_text())
    blocker["1"]["inputs"]["seed"] = 999
    other.queue(blocker)
    wait_for(lambda: hold_state(server)["holding"] == 1, 60, "the other prompt running")
    out = tmp_path / "out"
    job = start_workflow_cli(
        str(hold_workflow(tmp_path, hold=False)), "--output", str(out), "--server", server.url, "--timeout", "2"
    )
    try:
        wait_for(lambda: pending(server) == 1 or job.poll() is not None, 60, "the job's item queued")
        queued = time.monotonic()
        # The condition under test is time itself: the item has waited past its --timeout.
        wait_for(lambda: time.monotonic() - queued > 3 or job.poll() is not None, 10, "3 s in the queue")
        assert job.poll() is None
        cs.ComfyClient(server.url).request_json("POST", "/zimage_test_hold/release", {})
        stdout, stderr = finish(job, 60)
    finally:
        if job.poll() is None:
            job.kill()
    other.close()
    assert job.returncode == 0, stdout + stderr
    (record,) = manifest(out)
    assert record["status"] == "done" and record["seconds"] > 3  # longer than --timeout, all of it queued


def test_a_bad_seed_fails_its_own_row_and_says_which(holds, tmp_path):
    prompts = write_csv(tmp_path / "p.csv", [{"seed": "5"}, {"seed": "five"}, {"seed": "7"}])
    out = tmp_path / "out"
    proc = run_workflow_cli(
        str(hold_workflow(tmp_path, hold=False)), "--prompts", str(prompts), "--output", str(out),
        "--server", holds[0].url,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    by_row = {r["row"]: r for r in manifest(out)}
    assert by_row[1]["status"] == by_row[3]["status"] == "done" and by_row[2]["status"] == "failed"
    line = first_line(proc.stderr)
    assert line == "row 2 #1: failed: seed must be an integer, got 'five'; fix that row and run again with --resume"
    print(f"bad seed: exit {proc.returncode}; first line: {line}")

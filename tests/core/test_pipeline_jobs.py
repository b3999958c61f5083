"""The runner's job logic without a host: prompts files into items, resume from the manifest, the
scheduler's hand-over when a server stops answering, server checks and the model-file hint."""

import json
import threading

import pytest

from zimage_nodes.tools import pipeline as pl
from zimage_nodes.tools import workflow_convert as wc

# A prompt shaped like the converted Turbo example (API format).
PROMPT = {
    "2": {"class_type": "ZINodesLoader", "inputs": {"diffusion_model": "z.safetensors", "text_encoder": "q.safetensors", "vae": "ae.safetensors", "variant": "auto", "weight_dtype": "default"}, "_meta": {"title": "Z-Image Loader"}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["2", 1]}, "_meta": {"title": "Positive"}},
    "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}, "_meta": {"title": "EmptySD3LatentImage"}},
    "5": {"class_type": "ZINodesTurboSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0], "latent_image": ["4", 0], "seed": 42, "steps": ["2", 3], "sampler_name": "euler", "shift": 3.0}, "_meta": {"title": "Z-Image Turbo Sampler"}},
    "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["2", 2]}, "_meta": {"title": "VAE Decode"}},
    "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "zimage"}, "_meta": {"title": "Save Image"}},
}  # fmt: skip

# /object_info entries as ComfyUI sends them: a V1 node (list combo) and V3 nodes (COMBO + options).
OBJECT_INFO = {
    "ZINodesLoader": {
        "input": {"required": {
            "diffusion_model": ["COMBO", {"options": ["z.safetensors", "other.safetensors"]}],
            "text_encoder": ["COMBO", {"options": ["q.safetensors"]}],
            "vae": ["COMBO", {"options": ["ae.safetensors"]}],
            "variant": ["COMBO", {"options": ["auto", "turbo", "base"], "default": "auto"}],
            "weight_dtype": ["COMBO", {"options": ["default"], "default": "default"}],
        }},
        "input_order": {"required": ["diffusion_model", "text_encoder", "vae", "variant", "weight_dtype"]},
        "output": ["MODEL", "CLIP", "VAE", "INT", "FLOAT"], "output_name": ["MODEL", "CLIP", "VAE", "steps", "cfg"],
        "display_name": "Z-Image Loader", "output_node": False,
    },
    "CLIPTextEncode": {
        "input": {"required": {"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]}},
        "input_order": {"required": ["text", "clip"]}, "output": ["CONDITIONING"], "display_name": "CLIP Text Encode (Prompt)",
    },
    "EmptySD3LatentImage": {
        "input": {"required": {"width": ["INT", {"default": 1024, "min": 16}], "height": ["INT", {"default": 1024, "min": 16}], "batch_size": ["INT", {"default": 1}]}},
        "output": ["LATENT"], "display_name": "EmptySD3LatentImage",
    },
    "ZINodesTurboSampler": {
        "input": {"required": {
            "model": ["MODEL", {}], "positive": ["CONDITIONING", {}], "latent_image": ["LATENT", {}],
            "seed": ["INT", {"default": 0, "control_after_generate": True}], "steps": ["INT", {"default": 8}],
            "sampler_name": ["COMBO", {"options": ["euler", "res_multistep"]}], "shift": ["FLOAT", {"default": 3.0}],
        }, "optional": {"negative": ["CONDITIONING", {}]}},
        "input_order": {"required": ["model", "positive", "latent_image", "seed", "steps", "sampler_name", "shift"], "optional": ["negative"]},
        "output": ["LATENT"], "display_name": "Z-Image Turbo Sampler",
    },
    "VAEDecode": {"input": {"required": {"samples": ["LATENT"], "vae": ["VAE"]}}, "output": ["IMAGE"], "display_name": "VAE Decode"},
    "SaveImage": {"input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}}, "output": [], "output_node": True, "display_name": "Save Image"},
}  # fmt: skip


def definitions():
    return pl.ObjectInfoDefinitions(OBJECT_INFO)


def test_object_info_definitions_read_v3_combos_and_the_editor_layout():
    d = definitions()
    assert d.known("ZINodesLoader") and not d.known("KSampler")
    assert d.display_name("ZINodesTurboSampler") == "Z-Image Turbo Sampler"
    assert d.options("ZINodesLoader", "variant") == ["auto", "turbo", "base"]
    assert d.options("EmptySD3LatentImage", "width") is None
    # seed carries control_after_generate: the editor stores one extra value after it
    widgets = [(w.name, w.extras) for w in wc.widget_list(d.input_types("ZINodesTurboSampler"))]
    assert widgets == [("seed", 1), ("steps", 0), ("sampler_name", 0), ("shift", 0)]
    assert d.outputs("ZINodesLoader")[3] == ("steps", "INT")
    assert d.pack_nodes() == ["ZINodesLoader", "ZINodesTurboSampler"]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_txt_rows_set_the_positive_prompt(tmp_path):
    rows, kind = pl.read_rows(write(tmp_path, "p.txt", "a cat\n\n# a comment\na dog on a boat\n"))
    assert kind == "txt" and rows == [{"text": "a cat"}, {"text": "a dog on a boat"}]
    items = pl.expand_items(PROMPT, rows, 2, kind, definitions())
    assert [(i.row, i.seed) for i in items] == [(1, 42), (1, 43), (2, 42), (2, 43)]
    assert [i.prompt["3"]["inputs"]["text"] for i in items] == ["a cat", "a cat", "a dog on a boat", "a dog on a boat"]
    assert PROMPT["3"]["inputs"]["text"] == "a fox"  # the workflow itself is never edited
    assert [i.name for i in items[:2]] == ["row0001_seed42", "row0001_seed43"]
    assert len({i.key for i in items}) == 4


def test_csv_columns_are_set_targets_and_seed_sets_every_seed(tmp_path):
    text = 'Positive.text,seed,EmptySD3LatentImage.width\n123,7,512\n"a, quoted",,\n'
    rows, kind = pl.read_rows(write(tmp_path, "p.csv", text))
    items = pl.expand_items(PROMPT, rows, 1, kind, definitions())
    assert items[0].prompt["3"]["inputs"]["text"] == "123"  # STRING input: the text stays text
    assert items[0].prompt["4"]["inputs"]["width"] == 512 and items[0].seed == 7
    assert items[1].prompt["3"]["inputs"]["text"] == "a, quoted" and items[1].seed == 42
    assert items[1].prompt["4"]["inputs"]["width"] == 1024  # empty cell: the workflow's value
    assert items[0].overrides == {"Positive.text": "123", "seed": "7", "EmptySD3LatentImage.width": "512"}


def test_jsonl_rows(tmp_path):
    path = write(tmp_path, "p.jsonl", json.dumps({"5.sampler_name": "res_multistep", "seed": 3}) + "\n")
    rows, kind = pl.read_rows(path)
    (item,) = pl.expand_items(PROMPT, rows, 1, kind, definitions())
    assert item.prompt["5"]["inputs"]["sampler_name"] == "res_multistep" and item.seed == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ("Nope.text\nx\n", "no node with that id, title or type"),
        ("Positive.colour\nx\n", "no input 'colour'"),
        ("justacolumn\nx\n", "expected NODE.input"),
    ],
)
def test_bad_columns_are_refused_with_the_row(tmp_path, text, message):
    rows, kind = pl.read_rows(write(tmp_path, "p.csv", text))
    with pytest.raises(pl.JobError, match=message):
        pl.expand_items(PROMPT, rows, 1, kind, definitions())


def test_a_bad_seed_fails_its_own_row_only(tmp_path):
    rows, kind = pl.read_rows(write(tmp_path, "p.csv", "Positive.text,seed\na cat,7\na dog,abc\n"))
    good, bad = pl.expand_items(PROMPT, rows, 1, kind, definitions())
    assert good.error is None and good.seed == 7
    assert bad.error == "seed must be an integer, got 'abc'; fix that row and run again with --resume"
    assert bad.seed is None and bad.name == "row0002_n1"


@pytest.mark.parametrize(
    "name, text",
    [("p.txt", ""), ("p.txt", "# only a comment\n\n"), ("p.csv", "Positive.text,seed\n"), ("p.jsonl", "\n")],
)
def test_an_empty_prompts_file_is_refused(tmp_path, name, text):
    path = write(tmp_path, name, text)
    with pytest.raises(
        pl.JobError, match=f"the prompts file {path} has no .*; add at least one, or leave out --prompts"
    ):
        pl.read_rows(path)


def test_prompts_file_errors(tmp_path):
    with pytest.raises(pl.JobError, match="not found"):
        pl.read_rows(tmp_path / "missing.txt")
    with pytest.raises(pl.JobError, match="line 2"):
        pl.read_rows(write(tmp_path, "p.jsonl", '{"seed": 1}\nnot json\n'))
    with pytest.raises(pl.JobError, match=".txt"):
        pl.read_rows(write(tmp_path, "p.yaml", "x"))


def test_positive_target_follows_the_wiring_when_no_node_is_titled_positive():
    prompt = json.loads(json.dumps(PROMPT))
    prompt["3"]["_meta"]["title"] = "Prompt"
    assert pl.positive_text_target(prompt) == "3"
    del prompt["5"]["inputs"]["positive"]
    with pytest.raises(pl.JobError, match="positive prompt"):
        pl.positive_text_target(prompt)


def test_manifest_resume_skips_only_done_items_whose_files_exist(tmp_path):
    items = pl.expand_items(PROMPT, None, 3)
    manifest = pl.Manifest(tmp_path / "manifest.jsonl")
    (tmp_path / "a.png").write_bytes(b"x")
    manifest.append(pl.record_for(items[0], "done", files=[{"path": "a.png", "sha256": "0"}]))
    manifest.append(pl.record_for(items[1], "done", files=[{"path": "gone.png", "sha256": "0"}]))
    manifest.append(pl.record_for(items[2], "failed", error="boom"))
    with open(manifest.path, "a") as f:
        f.write('{"key": "cut sho')  # a line cut short by a crash
    assert manifest.done_keys() == {items[0].key}
    manifest.append(pl.record_for(items[2], "done", files=[]))  # the last line of an item wins
    assert manifest.done_keys() == {items[0].key, items[2].key}
    # A changed workflow changes every key: nothing of the old job counts as done.
    changed = json.loads(json.dumps(PROMPT))
    changed["4"]["inputs"]["width"] = 512
    assert not {i.key for i in pl.expand_items(changed, None, 3)} & manifest.done_keys()


def test_output_names():
    (item,) = pl.expand_items(PROMPT, None, 1)
    assert pl.output_names(item, [{"filename": "z_00001_.png", "node_id": "7"}]) == ["row0001_seed42.png"]
    two = pl.output_names(item, [{"filename": "a.png", "node_id": "7"}, {"filename": "b.png", "node_id": "9"}])
    assert two == ["row0001_seed42_node7_1.png", "row0001_seed42_node9_2.png"]


def test_check_server_names_what_is_missing():
    assert pl.check_server(definitions(), PROMPT) == []
    prompt = json.loads(json.dumps(PROMPT))
    prompt["2"]["inputs"]["vae"] = "missing_vae.safetensors"
    prompt["8"] = {"class_type": "SomePackNode", "inputs": {}}
    problems = pl.check_server(definitions(), prompt)
    assert "node types missing: SomePackNode" in problems
    assert any("model file missing: vae/missing_vae.safetensors (node 2 ZINodesLoader.vae)" in p for p in problems)
    without_pack = {k: v for k, v in OBJECT_INFO.items() if not k.startswith("ZINodes")}
    assert any(
        "Z-Image Nodes is not loaded" in p for p in pl.check_server(pl.ObjectInfoDefinitions(without_pack), PROMPT)
    )


WORKFLOW = {
    "nodes": [
        {
            "id": 2,
            "type": "ZINodesLoader",
            "properties": {
                "models": [{"name": "z.safetensors", "directory": "diffusion_models", "url": "https://x/z"}]
            },
        }
    ],
    "links": [],
}


def test_model_hint_only_for_model_file_errors():
    bad_sampler = {"5": {"class_type": "ZINodesTurboSampler", "errors": [{"message": "Value not in list", "extra_info": {"input_name": "sampler_name", "received_value": "eulerx"}}]}}  # fmt: skip
    assert pl.model_errors(PROMPT, bad_sampler, WORKFLOW) == []
    missing = {"2": {"class_type": "ZINodesLoader", "errors": [{"message": "Value not in list", "extra_info": {"input_name": "diffusion_model", "received_value": "z.safetensors"}}]}}  # fmt: skip
    names = pl.model_errors(PROMPT, missing, WORKFLOW)
    assert names == ["z.safetensors"]
    hint = pl.model_hint(WORKFLOW, names, demo_weights=False)
    assert "diffusion_models/z.safetensors  https://x/z" in hint and "--demo-weights" in hint
    assert "--demo-weights" not in pl.model_hint(WORKFLOW, names, demo_weights=True)
    # A checkpoint of another loader: --demo-weights would refuse it, so the hint does not offer it.
    other = {"nodes": [{"id": 9, "type": "CheckpointLoaderSimple", "properties": {"models": [{"name": "sdxl.safetensors", "directory": "checkpoints", "url": "https://x/sdxl"}]}}], "links": []}  # fmt: skip
    hint = pl.model_hint(other, ["sdxl.safetensors"], demo_weights=False)
    assert "checkpoints/sdxl.safetensors  https://x/sdxl" in hint and "--demo-weights" not in hint
    assert pl.model_hint(WORKFLOW, [], demo_weights=False) is None


def test_loopback():
    assert pl.is_loopback("http://127.0.0.1:8188") and pl.is_loopback("http://localhost:1")
    assert not pl.is_loopback("http://10.0.0.5:8188") and not pl.is_loopback("http://gpu-box:8188")


class _Unit:
    """Scheduler unit test stand-in for a server (no ComfyUI involved: only the hand-over logic)."""

    def __init__(self, url, die_after=None):
        self.url, self.die_after, self.ran = url, die_after, []
        self.lock = threading.Lock()


def test_scheduler_hands_a_dead_servers_items_to_the_others_and_isolates_failures():
    units = {"a": _Unit("a", die_after=1), "b": _Unit("b")}
    items = pl.expand_items(PROMPT, None, 8)
    bad = items[5].key

    def process(target, item):
        unit = units[target.url]
        with unit.lock:
            if unit.die_after is not None and len(unit.ran) >= unit.die_after:
                raise pl.ServerDown(f"{target.url} is gone")
            unit.ran.append(item.key)
        if item.key == bad:
            raise ValueError("bad value")
        return pl.record_for(item, "done", server=target.url)

    records = []
    targets = [pl.Target("a", None), pl.Target("b", None)]
    pl.Scheduler(targets, process, records.append, max_in_flight=2).run(items)
    assert sorted(r["key"] for r in records) == sorted(i.key for i in items)  # each item exactly once
    statuses = {r["key"]: r["status"] for r in records}
    assert statuses.pop(bad) == "failed" and set(statuses.values()) == {"done"}
    assert not targets[0].alive and len(units["a"].ran) == 1 and len(units["b"].ran) == 7


def test_scheduler_fails_items_when_every_server_is_gone():
    items = pl.expand_items(PROMPT, None, 3)

    def process(target, item):
        raise pl.ServerDown("gone")

    records = []
    pl.Scheduler([pl.Target("a", None)], process, records.append, max_in_flight=1).run(items)
    assert len(records) == 3 and all(r["status"] == "failed" and "no server left" in r["error"] for r in records)


def test_summary_table():
    table = pl.summary_table({"done": 11, "failed": 1, "skipped": 2}, 11, 60.0, {"http://a": 6, "http://b": 5})
    assert "done              11" in table and "images / minute   11.00" in table and "done on http://b  5" in table


def _records_of(scheduler_kwargs, items, process, on_record=None, sigints_after=None):
    """Run a scheduler over stand-in targets in a thread with its own time bound."""
    records = []
    targets = [pl.Target("a", None), pl.Target("b", None)]
    scheduler = pl.Scheduler(targets, process, on_record or records.append, **scheduler_kwargs)
    runner = threading.Thread(target=scheduler.run, args=(items,), daemon=True)
    runner.start()
    if sigints_after is not None:
        assert sigints_after.wait(10)
        scheduler.sigints += 1
    runner.join(10)
    assert not runner.is_alive(), "the scheduler hung"
    return scheduler, records


def test_a_record_that_cannot_be_written_stops_the_job_instead_of_hanging():
    items = pl.expand_items(PROMPT, None, 6)

    def on_record(record):
        raise pl.ManifestError("cannot write the manifest /dev/full (No space left on device)")

    scheduler, _ = _records_of({"max_in_flight": 1}, items, lambda t, i: pl.record_for(i, "done"), on_record)
    assert scheduler.reason.startswith("cannot write the manifest /dev/full") and scheduler.stop_status == "failed"
    # Every item was offered to on_record exactly once: nothing is silently dropped.
    assert sorted(r["key"] for r in scheduler.unrecorded) == sorted(i.key for i in items)


def test_an_exception_anywhere_in_an_item_still_ends_it_with_a_record():
    items = pl.expand_items(PROMPT, None, 3)

    def process(target, item):
        if item.index == 1:
            raise KeyboardInterrupt  # not an Exception: before, it left the job waiting forever
        return pl.record_for(item, "done")

    _, records = _records_of({"max_in_flight": 1}, items, process)
    statuses = sorted(r["status"] for r in records)
    assert len(records) == 3 and statuses == ["done", "done", "failed"]


def test_ctrl_c_accounts_for_every_item_queued_running_and_never_started():
    items = pl.expand_items(PROMPT, None, 8)
    started = threading.Event()
    stop_seen = []

    def process(target, item):
        started.set()
        # A running item: it returns when the job stops (as a server's wait does), never on its own.
        while not scheduler_ref[0].stop.wait(0.01):
            pass
        stop_seen.append(item.key)
        return pl.record_for(item, "interrupted", server=target.url)

    scheduler_ref = [None]
    records = []
    targets = [pl.Target("a", None), pl.Target("b", None)]
    scheduler = pl.Scheduler(targets, process, records.append, max_in_flight=2)
    scheduler_ref[0] = scheduler
    runner = threading.Thread(target=scheduler.run, args=(items,), daemon=True)
    runner.start()
    assert started.wait(10)
    scheduler.sigints += 1
    runner.join(10)
    assert not runner.is_alive()
    assert sorted(r["key"] for r in records) == sorted(i.key for i in items)
    assert {r["status"] for r in records} == {"interrupted"} and scheduler.reason == "interrupted (Ctrl-C)"
    assert len(stop_seen) == 4  # the four in flight came back from their workers; four never started


def test_a_second_ctrl_c_does_not_wait_for_items_that_do_not_come_back():
    items = pl.expand_items(PROMPT, None, 3)
    started = threading.Event()
    never = threading.Event()

    def process(target, item):
        started.set()
        never.wait(30)  # a worker stuck on a server that does not answer
        return pl.record_for(item, "done")

    records = []
    scheduler = pl.Scheduler([pl.Target("a", None)], process, records.append, max_in_flight=1, grace=30)
    runner = threading.Thread(target=scheduler.run, args=(items,), daemon=True)
    runner.start()
    assert started.wait(10)
    scheduler.sigints = 2
    runner.join(10)
    assert not runner.is_alive()
    never.set()
    assert len(records) == 3 and {r["status"] for r in records} == {"interrupted"}


def test_the_watchdog_stops_a_job_where_nothing_moves():
    items = pl.expand_items(PROMPT, None, 2)
    never = threading.Event()

    def process(target, item):
        never.wait(30)  # queued on a server that never starts it, and never says so
        return pl.record_for(item, "done")

    scheduler, records = _records_of({"max_in_flight": 1, "stall_timeout": 0.5}, items, process)
    never.set()
    assert scheduler.reason.startswith("no item started, progressed or finished for 0.5 s")
    assert len(records) == 2 and {r["status"] for r in records} == {"failed"}


def test_a_lost_server_is_reported_once_by_name():
    lost = []
    items = pl.expand_items(PROMPT, None, 4)

    def process(target, item):
        if target.url == "a":
            raise pl.ServerDown("ConnectionRefusedError: refused")
        return pl.record_for(item, "done", server=target.url)

    records = []
    targets = [pl.Target("a", None), pl.Target("b", None)]
    scheduler = pl.Scheduler(
        targets, process, records.append, max_in_flight=2, on_server_down=lambda t, why: lost.append((t.url, why))
    )
    scheduler.run(items)
    assert lost == [("a", "ConnectionRefusedError: refused")] and targets[0].lost == "ConnectionRefusedError: refused"
    assert len(records) == 4 and {r["status"] for r in records} == {"done"}

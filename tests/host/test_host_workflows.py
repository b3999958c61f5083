"""The example workflows against the real ComfyUI under test: node types and widget layouts match the
definitions the editor receives, the UI->API conversion validates with ComfyUI's validate_prompt,
the Z-Image graphs run end to end through the runner on demo weights, and the runner's CLI works."""

import json
from pathlib import Path

import pytest
from comfy_host import run_workflow_cli

from zimage_nodes.tools import workflow_convert as wc

pytestmark = pytest.mark.host

PACK_DIR = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = PACK_DIR / "example_workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
ZIMAGE_WORKFLOWS = [p for p in WORKFLOWS if p.name.startswith("z_image")]
# Demo weights stand in for the Z-Image Loader's files only. The Fun ControlNet file cannot be stood
# in for: ComfyUI's ModelPatchLoader builds ZImage_Control at the released width (3840) whatever
# the file holds, so that workflow is validated with placeholders and refused by the demo runner.
CONTROLNET_WORKFLOW = WORKFLOW_DIR / "z_image_turbo_controlnet_nag.json"
DEMO_RUNNABLE = [p for p in ZIMAGE_WORKFLOWS if p != CONTROLNET_WORKFLOW]
SD_WORKFLOW = WORKFLOW_DIR / "sd_negative_prompt_cfg.json"
PNG = b"\x89PNG\r\n\x1a\n"
SMALL = [("EmptySD3LatentImage", "width", 64), ("EmptySD3LatentImage", "height", 64)]
FEWER_STEPS = [("ZINodesScheduler", "steps", 3)]  # the Turbo sampler's steps stay wired to the loader (8)


def load(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def definitions(host):
    return wc.HostDefinitions(host.comfy_nodes)


@pytest.fixture
def sd_checkpoint(host, tmp_path):
    """An empty file with the SD 1.5 checkpoint's name, so combo validation passes (never loaded)."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "v1-5-pruned-emaonly-fp16.safetensors").touch()
    host.add_model_folder("checkpoints", folder)
    yield folder
    fp = host.folder_paths
    fp.folder_names_and_paths["checkpoints"][0].remove(str(folder))
    fp.filename_list_cache.pop("checkpoints", None)


def real_nodes(wf):
    return [n for n in wf["nodes"] if n["type"] not in wc.VIRTUAL_TYPES]


@pytest.fixture(params=WORKFLOWS, ids=lambda p: p.stem)
def workflow(request):
    return load(request.param)


def test_every_node_type_exists_in_comfyui_or_the_pack(host, workflow):
    for node in real_nodes(workflow):
        assert node["type"] in host.comfy_nodes.NODE_CLASS_MAPPINGS, node["type"]
    assert {n["type"] for n in workflow["nodes"]} - set(host.comfy_nodes.NODE_CLASS_MAPPINGS) <= wc.VIRTUAL_TYPES


def count_widget_values(input_types):
    """Independent of workflow_convert: widget inputs in INPUT_TYPES order, +1 for control_after_generate
    and for an image upload button."""
    total = 0
    for section in ("required", "optional"):
        for name, spec in (input_types.get(section) or {}).items():
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if opts.get("forceInput"):
                continue
            kind = "COMBO" if isinstance(kind, list) else str(kind)
            if kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                total += 1
                if opts.get("control_after_generate", kind == "INT" and name in ("seed", "noise_seed")):
                    total += 1
                if opts.get("image_upload"):
                    total += 1  # the editor saves the upload button's value after the file combo
    return total


def test_widget_values_match_the_definitions(host, workflow):
    for node in real_nodes(workflow):
        input_types = host.node_class(node["type"]).INPUT_TYPES()
        assert len(node["widgets_values"]) == count_widget_values(input_types), (node["id"], node["type"])
        assert len(node["widgets_values"]) == wc.widget_value_count(input_types)


def test_slots_are_laid_out_as_the_editor_lays_them_out(host, workflow, definitions):
    # Sockets in definition order (required, then optional), then the wired widgets; outputs as defined.
    for node in real_nodes(workflow):
        input_types = definitions.input_types(node["type"])
        sockets = [(name, kind) for name, kind, _ in wc.socket_list(input_types)]
        widgets = [w.name for w in wc.widget_list(input_types)]
        listed = [(i["name"], i["type"]) for i in node["inputs"] if "widget" not in i]
        wired = [i["name"] for i in node["inputs"] if "widget" in i]
        assert listed == sockets, node["type"]
        assert node["inputs"][: len(listed)] == [i for i in node["inputs"] if "widget" not in i]
        assert wired == [w for w in widgets if w in wired], node["type"]
        # A graph saved on an older host may lack outputs the host has added since (v0.33's
        # SaveImage gained an IMAGE output); the editor appends them unconnected. Every saved
        # output must be the host's output at that position.
        saved = [(o["name"], o["type"]) for o in node["outputs"]]
        defined = definitions.outputs(node["type"])
        assert saved == defined[: len(saved)], (node["type"], saved, defined)


def test_combo_and_number_values_are_allowed_by_the_definitions(host, workflow, definitions):
    for node in real_nodes(workflow):
        input_types = definitions.input_types(node["type"])
        values = wc.map_widget_values(node, input_types)
        for name, kind, opts, _ in wc.ordered_inputs(input_types):
            loader = node["type"] in ("ZINodesLoader", "CheckpointLoaderSimple", "ModelPatchLoader", "LoadImage")
            if name not in values or loader or (node["type"], name) in wc.CORE_MODEL_INPUTS:
                continue  # model and input file lists depend on what is installed
            value = values[name]
            options = kind if isinstance(kind, list) else opts.get("options")
            if options is not None and wc._type_name(kind) == "COMBO":
                assert value in options, (node["type"], name, value)
            if "min" in opts:
                assert opts["min"] <= value <= opts.get("max", value), (node["type"], name, value)


def convert(host, definitions, path, demo_names=None):
    prompt = wc.load_prompt(load(path), definitions)
    if demo_names:
        wc.use_demo_models(prompt, demo_names)
    return prompt


@pytest.mark.parametrize("path", DEMO_RUNNABLE, ids=lambda p: p.stem)
def test_conversion_validates_with_demo_files(host, demo_models, definitions, path):
    _, names = demo_models
    prompt = convert(host, definitions, path, names)
    outputs = host.validate(prompt)
    assert sorted(outputs) == sorted(k for k, v in prompt.items() if v["class_type"] == "SaveImage")
    assert all(v["class_type"] not in wc.VIRTUAL_TYPES for v in prompt.values())


def test_controlnet_workflow_converts_and_validates(host, demo_models, definitions, tmp_path):
    """With the demo Z-Image files, an empty file under the Fun ControlNet's name (never loaded) and
    ComfyUI's own example image as the control image."""
    import shutil

    from comfy_host import COMFYUI

    _, names = demo_models
    folder = tmp_path / "model_patches"
    folder.mkdir()
    (folder / "Z-Image-Turbo-Fun-Controlnet-Union.safetensors").touch()
    host.add_model_folder("model_patches", folder)
    shutil.copy(COMFYUI / "input" / "example.png", Path(host.folder_paths.get_input_directory()) / "example.png")
    try:
        prompt = convert(host, definitions, CONTROLNET_WORKFLOW, names)
        assert sorted(host.validate(prompt)) == [k for k, v in prompt.items() if v["class_type"] == "SaveImage"]
    finally:
        fp = host.folder_paths
        fp.folder_names_and_paths["model_patches"][0].remove(str(folder))
        fp.filename_list_cache.pop("model_patches", None)
    by_type = {v["class_type"]: v["inputs"] for v in prompt.values()}
    assert by_type["ZINodesNAG"]["model"][0] == next(
        k for k, v in prompt.items() if v["class_type"] == "ZImageFunControlnet"
    )


def test_sd_workflow_converts_and_validates(host, demo_models, definitions, sd_checkpoint):
    prompt = convert(host, definitions, SD_WORKFLOW)
    assert host.validate(prompt)
    by_type = {v["class_type"]: v["inputs"] for v in prompt.values()}
    assert (
        by_type["ZINodesNegativePrompt"]["target"] == "clip" and by_type["ZINodesNegativePrompt"]["extra"] == "mustache"
    )
    assert by_type["ZINodesCFGGuider"]["cfg"] == 7.0
    assert by_type["RandomNoise"] == {"noise_seed": 7}  # the "fixed" companion is not an input


def test_converted_turbo_prompt_keeps_the_wired_steps(host, definitions):
    prompt = convert(host, definitions, WORKFLOW_DIR / "z_image_turbo_text_to_image.json")
    (sampler_id,) = [k for k, v in prompt.items() if v["class_type"] == "ZINodesTurboSampler"]
    (loader_id,) = [k for k, v in prompt.items() if v["class_type"] == "ZINodesLoader"]
    inputs = prompt[sampler_id]["inputs"]
    assert inputs["steps"] == [loader_id, 3]
    assert inputs["seed"] == 42 and inputs["sampler_name"] == "euler" and inputs["shift"] == 3.0
    assert "negative" not in inputs
    assert prompt[sampler_id]["_meta"]["title"] == "Z-Image Turbo Sampler"


def test_converted_comparison_feeds_one_seed_to_both_samplers(host, definitions):
    prompt = convert(host, definitions, WORKFLOW_DIR / "z_image_base_vs_turbo.json")
    by_type = {}
    for v in prompt.values():
        by_type.setdefault(v["class_type"], []).append(v["inputs"])
    assert by_type["ZINodesTurboSampler"][0]["seed"] == by_type["RandomNoise"][0]["noise_seed"] == 1234
    assert by_type["ZINodesTurboSampler"][0]["positive"] == by_type["ZINodesCFGGuider"][0]["positive"]


def saved(host, outputs):
    out = Path(host.folder_paths.get_output_directory())
    return [out / f["subfolder"] / f["filename"] for f in wc.saved_files(outputs) if f["type"] == "output"]


@pytest.fixture(scope="module")
def runner_server(demo_models, tmp_path_factory):
    """A ComfyUI server (the checkout's own main.py, the pack installed) with the demo files, for
    the runner's --server mode."""
    from comfy_host import COMFYUI

    from zimage_nodes.tools import comfy_server

    root, _ = demo_models
    server = comfy_server.ComfyServer(
        COMFYUI,
        model_folders={kind: [root / kind] for kind in ("diffusion_models", "text_encoders", "vae", "loras")},
        cpu=True,
        log_path=tmp_path_factory.getbasetemp() / "runner-server.log",
    )
    with server.start(timeout=300):
        yield server


@pytest.mark.parametrize("path", DEMO_RUNNABLE, ids=lambda p: p.stem)
def test_zimage_workflow_runs_end_to_end_through_the_runner(runner_server, path, tmp_path):
    data = load(path)
    sets = SMALL + FEWER_STEPS if "ZINodesScheduler" in json.dumps(data) else SMALL
    args = [a for node, name, value in sets for a in ("--set", f"{node}.{name}={value}")]
    proc = run_workflow_cli(
        str(path), "--demo-weights", "--server", runner_server.url, "--output", str(tmp_path), *args
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saves = [n for n in data["nodes"] if n["type"] == "SaveImage" and n.get("mode", 0) == 0]
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == len(saves) and all(p.read_bytes()[:8] == PNG for p in pngs)
    (record,) = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert record["status"] == "done" and len(record["files"]) == len(saves)
    assert "images made with them are noise" in proc.stdout.lower()


@pytest.mark.parametrize(
    "path, loader",
    [(SD_WORKFLOW, "CheckpointLoaderSimple"), (CONTROLNET_WORKFLOW, "ModelPatchLoader")],
    ids=["sd", "controlnet"],
)
def test_demo_weights_refuse_to_stand_in_for_other_loaders(host, demo_models, tmp_path, path, loader):
    from comfy_host import COMFYUI

    root, _ = demo_models
    proc = run_workflow_cli(
        str(path), "--comfyui", str(COMFYUI), "--demo-weights", "--demo-dir", str(root),
        "--output", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"({loader})" in proc.stderr and "--validate-only" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_cli_makes_two_demo_images(host, tmp_path):
    from comfy_host import COMFYUI

    out = tmp_path / "out"
    proc = run_workflow_cli(
        "example_workflows/z_image_turbo_text_to_image.json",
        "--comfyui",
        str(COMFYUI),
        "--demo-weights",
        "--set",
        "EmptySD3LatentImage.width=64",
        "--set",
        "EmptySD3LatentImage.height=64",
        "--count",
        "2",
        "--output",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:8] == PNG for p in pngs)
    assert [p.name for p in pngs] == ["row0001_seed42.png", "row0001_seed43.png"]  # --count advances the seed
    assert "embedded server http://127.0.0.1:" in proc.stdout and "noise" in proc.stdout
    assert "images / minute" in proc.stdout


def test_cli_failure_names_the_node_and_exits_non_zero(runner_server, tmp_path):
    proc = run_workflow_cli(
        "example_workflows/z_image_turbo_text_to_image.json",
        "--server",
        runner_server.url,
        "--demo-weights",
        "--set",
        "EmptySD3LatentImage.width=7",
        "--output",
        str(tmp_path),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "node 4 (EmptySD3LatentImage)" in proc.stderr and "width" in proc.stderr
    assert not list(tmp_path.glob("*.png"))
    (record,) = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert record["status"] == "failed" and (record["node_id"], record["node_type"]) == ("4", "EmptySD3LatentImage")


def test_cli_hint_only_for_missing_model_files(host, demo_models, tmp_path):
    # Issue 12: a bad sampler_name with --demo-weights is not about model files: no model hint.
    from comfy_host import COMFYUI

    root, _ = demo_models
    proc = run_workflow_cli(
        "example_workflows/z_image_turbo_text_to_image.json", "--comfyui", str(COMFYUI), "--demo-weights",
        "--demo-dir", str(root), "--set", "Z-Image Turbo Sampler.sampler_name=not_a_sampler",
        "--validate-only",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "node 5 (ZINodesTurboSampler)" in proc.stderr and "sampler_name" in proc.stderr
    assert "model files this workflow names" not in proc.stderr + proc.stdout


def test_cli_validates_the_sd_workflow_with_placeholders_only(host, demo_models, tmp_path):
    from comfy_host import COMFYUI

    root, _ = demo_models
    demo = tmp_path / "demo"
    demo.mkdir()
    for kind in ("diffusion_models", "text_encoders", "vae"):  # reuse the session's demo files
        (demo / kind).mkdir()
        for f in (root / kind).iterdir():
            (demo / kind / f.name).symlink_to(f)
    check = run_workflow_cli(
        str(SD_WORKFLOW),
        "--comfyui",
        str(COMFYUI),
        "--demo-weights",
        "--demo-dir",
        str(demo),
        "--validate-only",
        "--save-api",
        str(tmp_path / "api.json"),
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "valid:" in check.stdout
    api = json.loads((tmp_path / "api.json").read_text())
    assert {v["class_type"] for v in api.values()} >= {
        "CheckpointLoaderSimple",
        "ZINodesCFGGuider",
        "ZINodesNegativePrompt",
    }

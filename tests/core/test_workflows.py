"""The example workflows are well-formed editor graphs, and the UI->API conversion behaves as the
ComfyUI editor does. No ComfyUI needed: conversion runs on tables of node definitions."""

import json
import re
import sys
from pathlib import Path

import pytest
import workflow_layout as layout

from zimage_nodes.core.variants import TURBO
from zimage_nodes.tools import workflow_convert as wc

PACK_DIR = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = PACK_DIR / "example_workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
EXPECTED = {
    "z_image_turbo_text_to_image.json",
    "z_image_base_negative_prompt.json",
    "z_image_base_vs_turbo.json",
    "sd_negative_prompt_cfg.json",
    "z_image_turbo_nag_negative.json",
    "z_image_turbo_controlnet_nag.json",
    "z_image_turbo_lora.json",
}
PACK_NODES = {
    "ZINodesLoader",
    "ZINodesCFGGuider",
    "ZINodesTurboSampler",
    "ZINodesNegativePrompt",
    "ZINodesScheduler",
    "ZINodesNAG",
    "ZINodesLoRA",
}
CORE_NODES = {
    "CLIPTextEncode",
    "EmptySD3LatentImage",
    "EmptyLatentImage",
    "VAEDecode",
    "SaveImage",
    "SamplerCustomAdvanced",
    "RandomNoise",
    "KSamplerSelect",
    "BasicScheduler",
    "CheckpointLoaderSimple",
    # The Z-Image Fun ControlNet, as ComfyUI applies it.
    "ModelPatchLoader",
    "ZImageFunControlnet",
    "LoadImage",
}
FRONTEND_NODES = {"MarkdownNote", "Note", "PrimitiveNode"}
LOADERS = {"ZINodesLoader", "CheckpointLoaderSimple", "ModelPatchLoader"}
MODEL_DIRECTORIES = {"diffusion_models", "text_encoders", "vae", "checkpoints", "model_patches"}
# What the editor's "Missing Models" dialog can download (ComfyUI frontend 1.35 and 1.49).
DOWNLOADABLE_SUFFIXES = (".safetensors", ".sft")
DOWNLOAD_SOURCES = ("https://huggingface.co/", "https://civitai.com/")
OFFICIAL_URLS = {
    "z_image_turbo_bf16.safetensors": "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/diffusion_models/z_image_turbo_bf16.safetensors",
    "qwen_3_4b.safetensors": "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/qwen_3_4b.safetensors",
    "ae.safetensors": "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/vae/ae.safetensors",
    "Z-Image/": "https://huggingface.co/Tongyi-MAI/Z-Image",
    "v1-5-pruned-emaonly-fp16.safetensors": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors",
    "Z-Image-Turbo-Fun-Controlnet-Union.safetensors": "https://huggingface.co/alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union/resolve/main/Z-Image-Turbo-Fun-Controlnet-Union.safetensors",
}


def load(name):
    return json.loads((WORKFLOW_DIR / name).read_text(encoding="utf-8"))


def by_type(wf, node_type):
    return [n for n in wf["nodes"] if n["type"] == node_type]


def by_title(wf, title):
    found = [n for n in wf["nodes"] if n.get("title") == title]
    assert len(found) == 1, title
    return found[0]


def source_of(wf, node, input_name):
    """(origin node, origin slot) wired into a node's input."""
    inp = next(i for i in node["inputs"] if i["name"] == input_name)
    assert inp["link"] is not None, f"{node['type']}.{input_name} is not wired"
    link = next(l for l in wf["links"] if l[0] == inp["link"])
    origin = next(n for n in wf["nodes"] if n["id"] == link[1])
    return origin, link[2]


def test_the_four_examples_are_there():
    assert {p.name for p in WORKFLOWS} == EXPECTED


@pytest.fixture(params=WORKFLOWS, ids=lambda p: p.stem)
def workflow(request):
    return json.loads(request.param.read_text(encoding="utf-8"))


def test_graph_is_well_formed(workflow):
    wf = workflow
    assert wf["version"] == 0.4
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra"):
        assert key in wf, key
    ids = [n["id"] for n in wf["nodes"]]
    assert len(ids) == len(set(ids)), "duplicate node ids"
    assert all(isinstance(i, int) for i in ids)
    assert wf["last_node_id"] >= max(ids)
    link_ids = [l[0] for l in wf["links"]]
    assert len(link_ids) == len(set(link_ids)), "duplicate link ids"
    assert not link_ids or wf["last_link_id"] >= max(link_ids)
    nodes = {n["id"]: n for n in wf["nodes"]}
    for node in wf["nodes"]:
        for key in (
            "id",
            "type",
            "pos",
            "size",
            "flags",
            "order",
            "mode",
            "inputs",
            "outputs",
            "properties",
            "widgets_values",
        ):
            assert key in node, f"node {node['id']} lacks {key}"
        assert node["mode"] == 0
        assert len(node["pos"]) == 2 and len(node["size"]) == 2
        if node["type"] not in FRONTEND_NODES:
            assert node["properties"].get("Node name for S&R") == node["type"]
        names = [i["name"] for i in node["inputs"]]
        assert len(names) == len(set(names)), f"node {node['id']} has an input twice"
        for slot, out in enumerate(node["outputs"]):
            assert out.get("slot_index", slot) == slot
    for link in wf["links"]:
        assert len(link) == 6
        link_id, src, src_slot, dst, dst_slot, link_type = link
        assert src in nodes and dst in nodes, link
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert link_id in (out["links"] or []), f"link {link_id} missing from node {src} output {src_slot}"
        assert inp["link"] == link_id, f"link {link_id} is not what node {dst} input {dst_slot} names"
        assert link_type == inp["type"] == out["type"], f"link {link_id}: {link_type} / {out['type']} -> {inp['type']}"
    # every reference from a node names a link that points back at it
    links = {l[0]: l for l in wf["links"]}
    for node in wf["nodes"]:
        for slot, inp in enumerate(node["inputs"]):
            if inp["link"] is not None:
                assert links[inp["link"]][3:5] == [node["id"], slot]
        for slot, out in enumerate(node["outputs"]):
            for link_id in out["links"] or []:
                assert links[link_id][1:3] == [node["id"], slot]


def test_execution_order_respects_links(workflow):
    order = {n["id"]: n["order"] for n in workflow["nodes"]}
    assert sorted(order.values()) == list(range(len(order)))
    for _, src, _, dst, _, _ in workflow["links"]:
        assert order[src] < order[dst]


def test_node_types_are_core_or_ours(workflow):
    allowed = CORE_NODES | PACK_NODES | FRONTEND_NODES
    assert {n["type"] for n in workflow["nodes"]} <= allowed


def test_wired_widgets_keep_their_value(workflow):
    # The editor lists a wired widget among the inputs, with its name, and keeps its value.
    for node in workflow["nodes"]:
        for inp in node["inputs"]:
            if "widget" in inp:
                assert inp["widget"] == {"name": inp["name"]}
                assert inp["link"] is not None
                assert node["widgets_values"], node["type"]


def test_loaders_say_where_their_models_come_from(workflow):
    loaders = [n for n in workflow["nodes"] if n["type"] in LOADERS]
    assert loaders
    for node in loaders:
        models = node["properties"].get("models")
        assert models, f"node {node['id']} ({node['type']}) has no properties.models"
        for model in models:
            assert set(model) >= {"name", "url", "directory"}
            assert model["directory"] in MODEL_DIRECTORIES
            assert model["url"] == OFFICIAL_URLS[model["name"]], model
            # The editor offers only the models its widgets actually name.
            assert model["name"] in node["widgets_values"], model
            # The editor's download list takes single files only: any other entry (a repository
            # folder) shows a red error in a "Missing Models" dialog even when the folder is there.
            assert model["name"].endswith(DOWNLOADABLE_SUFFIXES), model
            assert model["url"].startswith(DOWNLOAD_SOURCES), model
        if node["type"] == "ZINodesLoader":
            files = [v for v in node["widgets_values"][:3] if not v.endswith("/")]
            assert sorted(m["name"] for m in models) == sorted(files)


def test_model_folders_are_linked_from_the_note(workflow):
    # A folder (diffusers repository) cannot be offered for download: the note links it instead.
    note = "\n".join(
        str(v) for n in workflow["nodes"] if n["type"] in ("MarkdownNote", "Note") for v in n["widgets_values"]
    )
    for node in by_type(workflow, "ZINodesLoader"):
        folder = node["widgets_values"][0]
        if folder.endswith("/"):
            assert OFFICIAL_URLS[folder] in note and f"`diffusion_models/{folder}`" in note


def test_each_graph_has_a_note_naming_its_models(workflow):
    notes = [n for n in workflow["nodes"] if n["type"] in ("MarkdownNote", "Note")]
    assert notes
    text = "\n".join(str(v) for n in notes for v in n["widgets_values"])
    for node in workflow["nodes"]:
        for model in node["properties"].get("models") or []:
            assert model["url"] in text, model["name"]


# -- what each example is --------------------------------------------------------------------------


def turbo_example(name):
    """A Turbo example, its one Z-Image loader (checked to load the Turbo release files) and its one
    Turbo sampler."""
    wf = load(name)
    (loader,) = by_type(wf, "ZINodesLoader")
    (sampler,) = by_type(wf, "ZINodesTurboSampler")
    assert loader["widgets_values"][:3] == ["z_image_turbo_bf16.safetensors", "qwen_3_4b.safetensors", "ae.safetensors"]
    return wf, loader, sampler


def test_turbo_text_to_image():
    wf, loader, sampler = turbo_example("z_image_turbo_text_to_image.json")
    (latent,) = by_type(wf, "EmptySD3LatentImage")
    assert latent["widgets_values"] == [1024, 1024, 1]
    assert source_of(wf, sampler, "steps") == (loader, 3)
    assert loader["outputs"][3]["name"] == "steps"
    seed, control, steps, sampler_name, shift, denoise = sampler["widgets_values"]
    assert (
        control in ("fixed", "randomize") and steps == 8 and sampler_name == "euler" and shift == 3.0 and denoise == 1.0
    )
    assert source_of(wf, by_type(wf, "VAEDecode")[0], "samples")[0] is sampler
    assert len(by_type(wf, "SaveImage")) == 1


def test_turbo_lora():
    wf, loader, sampler = turbo_example("z_image_turbo_lora.json")
    (lora,) = by_type(wf, "ZINodesLoRA")
    assert source_of(wf, lora, "model") == (loader, 0) and source_of(wf, lora, "clip") == (loader, 1)
    assert source_of(wf, sampler, "model") == (lora, 0)
    (positive,) = by_type(wf, "CLIPTextEncode")
    assert source_of(wf, positive, "clip") == (lora, 1)
    assert source_of(wf, sampler, "steps") == (loader, 3)
    name, strength_model, strength_clip, strict = lora["widgets_values"]
    assert name.endswith(".safetensors") and 0 < strength_model <= 1 and strict is False


def assert_nag_feeds_turbo(wf, nag, sampler, loader):
    """NAG's negative from the "Negative (NAG)" encoder, NAG -> Turbo sampler, the sampler's own
    negative empty, its steps from the loader, NAG settings that act, the Turbo settings."""
    assert source_of(wf, nag, "negative")[0] is by_title(wf, "Negative (NAG)")
    assert source_of(wf, sampler, "model") == (nag, 0)
    assert source_of(wf, sampler, "positive")[0] is by_title(wf, "Positive")
    assert next(i for i in sampler["inputs"] if i["name"] == "negative")["link"] is None
    assert source_of(wf, sampler, "steps") == (loader, 3)
    scale, tau, alpha, sigma_end = nag["widgets_values"]
    assert scale > 1.0 and tau >= 1.0 and 0.0 < alpha <= 1.0 and 0.0 <= sigma_end < 1.0
    _, _, steps, sampler_name, shift, _ = sampler["widgets_values"]
    assert (steps, sampler_name, shift) == (8, "euler", 3.0)


def test_turbo_nag_negative():
    wf, loader, sampler = turbo_example("z_image_turbo_nag_negative.json")
    (nag,) = by_type(wf, "ZINodesNAG")
    # The negative acts through NAG: loader -> NAG -> Turbo sampler, the sampler's own negative empty.
    assert source_of(wf, nag, "model") == (loader, 0)
    assert_nag_feeds_turbo(wf, nag, sampler, loader)


def test_turbo_controlnet_nag():
    wf, loader, sampler = turbo_example("z_image_turbo_controlnet_nag.json")
    (control,) = by_type(wf, "ZImageFunControlnet")
    (nag,) = by_type(wf, "ZINodesNAG")
    # loader -> ComfyUI's Fun ControlNet -> NAG -> Turbo sampler: the control and the negative on one model.
    assert source_of(wf, control, "model") == (loader, 0)
    assert source_of(wf, control, "vae") == (loader, 2)
    assert source_of(wf, control, "model_patch")[0]["type"] == "ModelPatchLoader"
    assert source_of(wf, control, "image")[0] is by_title(wf, "Control image")
    assert source_of(wf, nag, "model") == (control, 0)
    assert_nag_feeds_turbo(wf, nag, sampler, loader)


def test_base_with_negative_prompt():
    wf = load("z_image_base_negative_prompt.json")
    (loader,) = by_type(wf, "ZINodesLoader")
    assert loader["widgets_values"][3] == "base"
    (neg_prompt,) = by_type(wf, "ZINodesNegativePrompt")
    assert neg_prompt["widgets_values"][0] == "zimage"
    negative = by_title(wf, "Negative")
    assert source_of(wf, negative, "text") == (neg_prompt, 0)
    (guider,) = by_type(wf, "ZINodesCFGGuider")
    assert source_of(wf, guider, "negative")[0] is negative
    assert source_of(wf, guider, "positive")[0] is by_title(wf, "Positive")
    cfg, normalization, truncation = guider["widgets_values"]
    assert 4.0 <= cfg <= 6.0 and truncation == 1.0
    (sched,) = by_type(wf, "ZINodesScheduler")
    assert sched["widgets_values"][1] == 1.0
    assert 28 <= sched["widgets_values"][0] <= 50
    (sca,) = by_type(wf, "SamplerCustomAdvanced")
    assert source_of(wf, sca, "sigmas")[0] is sched
    assert source_of(wf, sca, "noise")[0]["type"] == "RandomNoise"
    assert source_of(wf, sca, "sampler")[0]["type"] == "KSamplerSelect"


def test_base_vs_turbo_shares_prompt_and_seed():
    wf = load("z_image_base_vs_turbo.json")
    (turbo,) = by_type(wf, "ZINodesTurboSampler")
    (guider,) = by_type(wf, "ZINodesCFGGuider")
    (noise,) = by_type(wf, "RandomNoise")
    assert source_of(wf, turbo, "positive") == source_of(wf, guider, "positive")
    assert source_of(wf, turbo, "negative") == source_of(wf, guider, "negative")  # wired, ignored by Turbo
    seed_turbo, seed_base = source_of(wf, turbo, "seed"), source_of(wf, noise, "noise_seed")
    assert seed_turbo == seed_base and seed_turbo[0]["type"] == "PrimitiveNode"
    assert turbo["widgets_values"][0] == noise["widgets_values"][0] == seed_turbo[0]["widgets_values"][0]
    variants = sorted(n["widgets_values"][3] for n in by_type(wf, "ZINodesLoader"))
    assert variants == ["base", "turbo"]
    prefixes = [n["widgets_values"][0] for n in by_type(wf, "SaveImage")]
    assert len(prefixes) == 2 and len(set(prefixes)) == 2
    titles = " ".join(g["title"] for g in wf["groups"]).lower()
    assert len(wf["groups"]) >= 2 and "turbo" in titles and "base" in titles
    for group in wf["groups"]:
        assert len(group["bounding"]) == 4


def test_sd_negative_prompt_with_cfg_guider():
    wf = load("sd_negative_prompt_cfg.json")
    (ckpt,) = by_type(wf, "CheckpointLoaderSimple")
    assert ckpt["widgets_values"] == ["v1-5-pruned-emaonly-fp16.safetensors"]
    assert by_title(wf, "Positive")["widgets_values"] == ["Portrait photo of a man."]
    (neg_prompt,) = by_type(wf, "ZINodesNegativePrompt")
    assert neg_prompt["widgets_values"][0] == "clip" and neg_prompt["widgets_values"][-1] == "mustache"
    assert source_of(wf, by_title(wf, "Negative"), "text") == (neg_prompt, 0)
    (guider,) = by_type(wf, "ZINodesCFGGuider")
    assert 6.0 <= guider["widgets_values"][0] <= 8.0
    assert by_type(wf, "EmptyLatentImage")[0]["widgets_values"] == [512, 512, 1]
    assert source_of(wf, guider, "model") == (ckpt, 0)


# -- what a person sees in the editor -------------------------------------------------------------


def test_follows_the_layout_rules(workflow):
    # tests/workflow_layout.py's docstring lists the rules (fitted zoom, saved view, note heading,
    # room for messages, SaveImage height, no overlaps); every example must follow all of them.
    assert layout.layout_problems(workflow) == []


def test_text_threshold_is_the_frontends():
    # LGraphCanvas.updateLowQualityThreshold: MinFontSizeForLOD 8 / NODE_TEXT_SIZE 14.
    assert layout.TEXT_ZOOM_THRESHOLD == pytest.approx(0.5714, abs=1e-4)
    assert layout.TEXT_ZOOM_THRESHOLD < layout.READABLE_ZOOM


def test_fitted_view_is_the_frontends_fit():
    # Two nodes spanning 600 x 500 units (title bars included) at 1366x768: the height limits,
    # 0.75 * 768 / (500 + 2 * 10), and the bounds' centre lands on the window's centre.
    nodes = [{"pos": [0, 30], "size": [100, 100]}, {"pos": [500, 400], "size": [100, 100]}]
    view = layout.fitted_view(nodes, (1366, 768))
    assert view["scale"] == pytest.approx(0.75 * 768 / 520)
    centre = layout.to_screen((300, 250), view)
    assert centre == pytest.approx((683, 384))


def test_message_room_is_measured_across_the_nodes_width():
    loader = {"id": 1, "type": "ZINodesLoader", "pos": [0, 0], "size": [300, 200]}
    below = {"id": 2, "type": "X", "pos": [100, 200 + 50 + 54], "size": [100, 100]}
    beside = {"id": 3, "type": "X", "pos": [400, 210], "size": [100, 100]}
    assert layout.message_room(loader, [loader, below, beside]) == 50
    assert layout.message_room(loader, [loader, beside]) == float("inf")
    assert layout.message_room_problems({"nodes": [loader, below, beside]})


def notes_of(wf):
    return [n for n in wf["nodes"] if n["type"] in ("MarkdownNote", "Note")]


def note_text(wf):
    return "\n".join(str(v) for n in notes_of(wf) for v in n["widgets_values"])


def test_nodes_and_group_titles_do_not_overlap(workflow):
    assert layout.overlapping_nodes(workflow["nodes"]) == []
    assert layout.group_title_clashes(workflow["nodes"], workflow["groups"]) == []


def test_paths_named_in_notes_exist():
    for path in WORKFLOWS:
        for named in re.findall(r"`(?:python )?((?:tools|example_workflows)/[\w./-]+)", note_text(load(path.name))):
            assert (PACK_DIR / named.split()[0]).exists(), (path.name, named)


def model_evaluations(wf):
    """Model forwards per image of each branch of base_vs_turbo, read from the graph itself."""
    (sampler,) = by_type(wf, "ZINodesTurboSampler")
    steps_in = next(i for i in sampler["inputs"] if i["name"] == "steps")
    if steps_in["link"] is not None:
        origin, slot = source_of(wf, sampler, "steps")
        assert origin["type"] == "ZINodesLoader" and slot == 3 and origin["widgets_values"][3] == "turbo"
        turbo_steps = TURBO.steps  # the loader's recommended steps for the variant it is set to
    else:
        turbo_steps = sampler["widgets_values"][2]
    (guider,) = by_type(wf, "ZINodesCFGGuider")
    cfg, _, truncation = guider["widgets_values"]
    assert truncation == 1.0  # every step guided; with truncation some late steps would cost one
    (scheduler,) = by_type(wf, "ZINodesScheduler")
    base_steps = scheduler["widgets_values"][0]
    per_step = 2 if cfg != 1.0 else 1  # positive and negative, both evaluated whenever cfg != 1
    return turbo_steps, base_steps, per_step


def test_base_vs_turbo_note_counts_the_model_evaluations_of_the_graph():
    wf = load("z_image_base_vs_turbo.json")
    turbo_steps, base_steps, per_step = model_evaluations(wf)
    text = note_text(wf)
    stated = re.search(r"(\d+) x (\d+) = (\d+) per image, (\d+(?:\.\d+)?)x Turbo's (\d+)", text)
    assert stated, "the note states the Base/Turbo evaluation count"
    steps, per, total, ratio, turbo = (float(g) for g in stated.groups())
    assert (steps, per, total, turbo) == (base_steps, per_step, base_steps * per_step, turbo_steps)
    assert ratio == base_steps * per_step / turbo_steps == 7
    assert f"**Turbo** (top): {turbo_steps} steps" in text and f"**Base** (bottom): {base_steps} steps" in text
    titles = {g["title"] for g in wf["groups"]}
    assert any(t.startswith(f"Z-Image-Turbo: {turbo_steps} steps, cfg 1") for t in titles), titles
    assert any(t.startswith(f"Z-Image base: {base_steps} steps") for t in titles), titles


# -- conversion, on a table of definitions ---------------------------------------------------------

DEFS = wc.TableDefinitions(
    {
        "Loader": {"required": {"name": (["a.safetensors", "b.safetensors"],)}},
        "Encode": {"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}},
        "Sampler": {
            "required": {
                "model": ("MODEL",),
                "seed": ("INT", {"default": 0, "control_after_generate": True}),
                "steps": ("INT", {"default": 20}),
                "cfg": ("FLOAT", {"default": 8.0}),
                "sampler_name": (["euler", "heun"],),
                "positive": ("CONDITIONING",),
                "latent": ("LATENT",),
            },
            "optional": {"negative": ("CONDITIONING",)},
        },
        "Noise": {"required": {"noise_seed": ("INT", {"default": 0})}},  # seed name: control widget implied
        "Pick": {
            "required": {
                "choice": ("COMBO", {"options": ["x", "y"], "control_after_generate": True}),
                "image": (["p.png"], {"image_upload": True}),
            }
        },
        "Scale": {
            "required": {
                "latent": ("LATENT",),
                "factor": ("FLOAT", {"default": 1.0}),
                "count": ("INT", {"forceInput": True}),
            }
        },
        "Empty": {"required": {"width": ("INT", {"default": 512}), "height": ("INT", {"default": 512})}},
        "Save": {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}},
    },
    {"Sampler": "My Sampler"},
)


def node(id_, type_, inputs=(), outputs=(), widgets=(), mode=0, title=None):
    n = {
        "id": id_,
        "type": type_,
        "mode": mode,
        "inputs": [dict(i) for i in inputs],
        "outputs": [dict(o) for o in outputs],
        "widgets_values": list(widgets),
        "properties": {},
    }
    if title:
        n["title"] = title
    return n


def socket(name, type_, link=None, widget=False):
    out = {"name": name, "type": type_, "link": link}
    if widget:
        out["widget"] = {"name": name}
    return out


def graph(nodes, links):
    return {"last_node_id": 99, "last_link_id": 99, "nodes": nodes, "links": links, "version": 0.4}


def sampler_graph(loader_mode=0, extra_nodes=(), extra_links=(), seed_link=None, model_link=1):
    nodes = [
        node(
            1,
            "Loader",
            outputs=[{"name": "MODEL", "type": "MODEL", "links": [1]}],
            widgets=["b.safetensors"],
            mode=loader_mode,
        ),
        node(
            2,
            "Sampler",
            inputs=[
                socket("model", "MODEL", model_link),
                socket("positive", "CONDITIONING"),
                socket("latent", "LATENT"),
                socket("negative", "CONDITIONING"),
            ]
            + ([socket("seed", "INT", seed_link, widget=True)] if seed_link else []),
            outputs=[{"name": "LATENT", "type": "LATENT", "links": []}],
            widgets=[5, "randomize", 12, 6.5, "heun"],
        ),
        node(3, "Note", widgets=["read me"]),
        *extra_nodes,
    ]
    return graph(nodes, [[1, 1, 0, 2, 0, "MODEL"], *extra_links])


def test_widget_values_skip_the_control_after_generate_companion():
    api = wc.ui_to_api(sampler_graph(), DEFS)
    assert set(api) == {"1", "2"}  # the note is dropped
    assert api["2"]["class_type"] == "Sampler"
    assert api["2"]["inputs"] == {"seed": 5, "steps": 12, "cfg": 6.5, "sampler_name": "heun", "model": ["1", 0]}
    assert api["2"]["_meta"]["title"] == "My Sampler"
    assert api["1"]["inputs"] == {"name": "b.safetensors"}


def test_companion_counts_follow_the_editor():
    assert wc.widget_value_count(DEFS.input_types("Sampler")) == 5  # seed + control, steps, cfg, sampler
    assert wc.widget_value_count(DEFS.input_types("Noise")) == 2  # noise_seed gets a control by its name
    assert wc.widget_value_count(DEFS.input_types("Pick")) == 5  # combo control + filter, upload button
    assert wc.widget_value_count(DEFS.input_types("Scale")) == 1  # forceInput is a socket
    assert [s[0] for s in wc.socket_list(DEFS.input_types("Sampler"))] == ["model", "positive", "latent", "negative"]
    n = node(1, "Pick", widgets=["y", "increment", "", "p.png", "image"])
    assert wc.ui_to_api(graph([n], []), DEFS)["1"]["inputs"] == {"choice": "y", "image": "p.png"}


def test_wired_widget_takes_the_link_and_primitive_values_flow_in():
    primitive = node(
        4,
        "PrimitiveNode",
        outputs=[{"name": "INT", "type": "INT", "links": [2], "widget": {"name": "seed"}}],
        widgets=[777, "fixed"],
    )
    wf = sampler_graph(extra_nodes=[primitive], extra_links=[[2, 4, 0, 2, 4, "INT"]], seed_link=2)
    api = wc.ui_to_api(wf, DEFS)
    assert api["2"]["inputs"]["seed"] == 777
    assert "4" not in api


def test_reroutes_are_followed_to_their_source():
    reroute = node(5, "Reroute", inputs=[socket("", "*", 1)], outputs=[{"name": "", "type": "MODEL", "links": [3]}])
    wf = sampler_graph(extra_nodes=[reroute], model_link=3)
    wf["links"] = [[1, 1, 0, 5, 0, "*"], [3, 5, 0, 2, 0, "MODEL"]]
    api = wc.ui_to_api(wf, DEFS)
    assert api["2"]["inputs"]["model"] == ["1", 0]
    assert "5" not in api


def test_muted_nodes_drop_out_with_the_inputs_they_fed():
    api = wc.ui_to_api(sampler_graph(loader_mode=2), DEFS)
    assert set(api) == {"2"}
    assert "model" not in api["2"]["inputs"]


def test_bypassed_nodes_pass_their_matching_input_through():
    nodes = [
        node(1, "Empty", outputs=[{"name": "LATENT", "type": "LATENT", "links": [1]}], widgets=[64, 64]),
        node(
            2,
            "Scale",
            inputs=[socket("latent", "LATENT", 1), socket("count", "INT")],
            outputs=[{"name": "LATENT", "type": "LATENT", "links": [2]}],
            widgets=[2.0],
            mode=4,
        ),
        node(
            3,
            "Sampler",
            inputs=[
                socket("model", "MODEL"),
                socket("positive", "CONDITIONING"),
                socket("latent", "LATENT", 2),
                socket("negative", "CONDITIONING"),
            ],
            outputs=[{"name": "LATENT", "type": "LATENT", "links": []}],
            widgets=[1, "fixed", 4, 1.0, "euler"],
        ),
    ]
    api = wc.ui_to_api(graph(nodes, [[1, 1, 0, 2, 0, "LATENT"], [2, 2, 0, 3, 2, "LATENT"]]), DEFS)
    assert set(api) == {"1", "3"}
    assert api["3"]["inputs"]["latent"] == ["1", 0]


def test_widget_value_count_mismatch_names_the_node():
    wf = sampler_graph()
    wf["nodes"][1]["widgets_values"] = [5, "randomize", 12, 6.5, "heun", "surplus"]
    with pytest.raises(wc.ConversionError) as err:
        wc.ui_to_api(wf, DEFS)
    assert err.value.node_id == "2" and err.value.node_type == "Sampler"
    assert "widgets_values has 6 entries" in str(err.value)


def test_short_widget_values_fall_back_to_defaults_with_a_warning():
    wf = sampler_graph()
    wf["nodes"][1]["widgets_values"] = [5, "fixed", 12]
    warnings = []
    api = wc.ui_to_api(wf, DEFS, warnings)
    assert api["2"]["inputs"]["cfg"] == 8.0 and api["2"]["inputs"]["sampler_name"] == "euler"
    assert len(warnings) == 2


def test_legacy_force_input_values_are_dropped():
    n = node(1, "Scale", inputs=[socket("latent", "LATENT")], widgets=[2.0, 9])
    assert wc.ui_to_api(graph([n], []), DEFS)["1"]["inputs"] == {"factor": 2.0}


def test_unknown_types_and_subgraphs_are_refused_by_name():
    with pytest.raises(wc.ConversionError, match="unknown node type") as err:
        wc.ui_to_api(graph([node(7, "Mystery")], []), DEFS)
    assert err.value.node_id == "7"
    wf = graph([node(8, "1234-abcd")], [])
    wf["definitions"] = {"subgraphs": [{"id": "1234-abcd"}]}
    with pytest.raises(wc.ConversionError, match="subgraph"):
        wc.ui_to_api(wf, DEFS)


def test_api_prompts_pass_through_and_list_values_are_wrapped():
    api = {"3": {"class_type": "Empty", "inputs": {"width": 8, "height": 8}}}
    assert wc.load_prompt(api, DEFS) == api
    assert wc.load_prompt({"prompt": api}, DEFS) == api
    with pytest.raises(wc.ConversionError):
        wc.load_prompt({"hello": 1}, DEFS)
    n = node(1, "Empty", widgets=[[1, 2], 3])
    assert wc.ui_to_api(graph([n], []), DEFS)["1"]["inputs"]["width"] == {"__value__": [1, 2]}


def test_overrides_by_id_title_and_type():
    api = wc.ui_to_api(sampler_graph(), DEFS)
    api["1"]["_meta"]["title"] = "Positive"
    assert wc.parse_override("Positive.text=a cat") == ("Positive", "text", "a cat")
    assert wc.parse_override("4.seed=5") == ("4", "seed", 5)
    assert wc.parse_override("My.Node.cfg=2.5") == ("My.Node", "cfg", 2.5)
    assert wc.parse_override("x.flag=true") == ("x", "flag", True)
    for bad in ("noequals", "nodot=3", ".x=1"):
        with pytest.raises(ValueError):
            wc.parse_override(bad)
    assert wc.find_nodes(api, "2") == ["2"]
    assert wc.find_nodes(api, "My Sampler") == ["2"]
    assert wc.find_nodes(api, "Sampler") == ["2"]
    assert wc.find_nodes(api, "positive") == ["1"]
    wc.apply_overrides(api, [("My Sampler", "steps", 3), ("Sampler", "model", 7)], DEFS)
    assert api["2"]["inputs"]["steps"] == 3 and api["2"]["inputs"]["model"] == 7
    with pytest.raises(wc.ConversionError, match="no input 'stepz'"):
        wc.apply_overrides(api, [("2", "stepz", 3)], DEFS)
    with pytest.raises(wc.ConversionError, match="no node"):
        wc.apply_overrides(api, [("Nobody", "steps", 3)], DEFS)


def test_seed_offsets_advance_every_seed_and_wrap():
    api = {
        "1": {"class_type": "A", "inputs": {"seed": 5}},
        "2": {"class_type": "B", "inputs": {"noise_seed": wc.SEED_MAX}},
        "3": {"class_type": "C", "inputs": {"seed": ["1", 0]}},
    }
    out = wc.with_seed_offset(api, 2)
    assert out["1"]["inputs"]["seed"] == 7 and out["2"]["inputs"]["noise_seed"] == 1
    assert out["3"]["inputs"]["seed"] == ["1", 0]
    assert api["1"]["inputs"]["seed"] == 5  # a copy


def test_demo_models_replace_zimage_loader_files_by_variant():
    names = {"turbo": "T.safetensors", "base": "B.safetensors", "text_encoder": "Q.safetensors", "vae": "V.safetensors"}
    api = {
        "1": {
            "class_type": "ZINodesLoader",
            "inputs": {"diffusion_model": "z_image_turbo_bf16.safetensors", "variant": "auto"},
        },
        "2": {"class_type": "ZINodesLoader", "inputs": {"diffusion_model": "Z-Image/", "variant": "base"}},
        "3": {
            "class_type": "ZINodesLoader",
            "inputs": {"diffusion_model": "my_z_image_base.safetensors", "variant": "auto"},
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd.safetensors"}},
    }
    assert len(wc.use_demo_models(api, names)) == 3
    assert [api[k]["inputs"]["diffusion_model"] for k in "123"] == ["T.safetensors", "B.safetensors", "B.safetensors"]
    assert api["1"]["inputs"]["text_encoder"] == "Q.safetensors" and api["2"]["inputs"]["vae"] == "V.safetensors"
    assert wc.model_file_inputs(api) == [
        {
            "node_id": "4",
            "class_type": "CheckpointLoaderSimple",
            "input": "ckpt_name",
            "name": "sd.safetensors",
            "directory": "checkpoints",
        }
    ]


def test_runner_keeps_the_pack_root_off_sys_path(monkeypatch):
    from zimage_nodes.tools import run_workflow as runner

    monkeypatch.setattr(sys, "path", [str(PACK_DIR), str(PACK_DIR / "tools"), "/somewhere/else"])
    runner._keep_pack_root_off_sys_path()
    assert sys.path == ["/somewhere/else", str(PACK_DIR / "tools" / "site")]
    assert runner.build_parser().parse_args(
        ["w.json", "--set", "a.b=1", "--set", "c.d=2", "--count", "3"]
    ).overrides == ["a.b=1", "c.d=2"]

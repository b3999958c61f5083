"""Turn a workflow saved by the ComfyUI editor (UI/graph format) into the API-format prompt that
ComfyUI executes, the way the editor does it when you press Run; plus the small edits the workflow
runner makes to a prompt (overrides, seed steps, demo files).

Host-free: node definitions come in through a small interface (``input_types(class_type)``,
``display_name(class_type)``), which `HostDefinitions` fills from a booted ComfyUI and tests can fill
from a table. What the conversion mirrors (ComfyUI frontend 1.35, graphToPrompt):

- ``widgets_values`` maps, in ``INPUT_TYPES`` order (required, then optional), onto the inputs that
  are widgets (INT, FLOAT, BOOLEAN, STRING, combos, ...; not ``forceInput``). The editor stores
  companion values that are not inputs right after some widgets: the "control after generate"
  choice ("fixed", "randomize", ...) after any INT named seed / noise_seed or declaring
  ``control_after_generate`` (combos with it also store a filter string), and the upload button's
  value after file combos with ``image_upload`` and the like. Those are skipped.
- A widget that is wired from a link is listed in the node's ``inputs`` with ``"widget"`` and a
  link; the link wins, the stored value stays in ``widgets_values``.
- Muted nodes (mode 2) are dropped, and inputs wired from them disappear.
- Bypassed nodes (mode 4) are dropped; their consumers get the bypassed node's input of the matching
  type instead (same slot first, then the first exact type, then the first compatible type).
- Virtual nodes do not execute: Note / MarkdownNote are dropped, a Reroute is followed through to
  its source, a PrimitiveNode's value is written into the widgets it feeds.
- Subgraphs and legacy group nodes are not supported (unpack them in the editor first).
"""

from __future__ import annotations

import copy
import enum
import json
import re
from dataclasses import dataclass

# Frontend-only node types: the editor knows them, ComfyUI's server does not.
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
VIRTUAL_TYPES = NOTE_TYPES | {"Reroute", "PrimitiveNode"}

# Input types the editor draws as widgets (ComfyWidgets in the frontend); anything else is a socket.
WIDGET_TYPES = frozenset(
    "INT FLOAT BOOLEAN STRING COMBO MARKDOWN IMAGEUPLOAD COLOR IMAGECOMPARE CHART GALLERIA TEXTAREA".split()
)
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "file_upload")
SEED_MAX = 0xFFFFFFFFFFFFFFFF

MODE_NORMAL, MODE_MUTED, MODE_BYPASS = 0, 2, 4

# Model files of core loader nodes: (class_type, input) -> models folder.
CORE_MODEL_INPUTS = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name1"): "text_encoders",
    ("TripleCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name3"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("ZINodesLoRA", "lora_name"): "loras",  # the pack's LoRA node
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("StyleModelLoader", "style_model_name"): "style_models",
}
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
ZIMAGE_LOADER = "ZINodesLoader"
# Inputs of other pack nodes that --demo-weights stands in for: (class_type, input) -> demo role.
DEMO_STANDINS = {("ZINodesLoRA", "lora_name"): "lora"}


class ConversionError(ValueError):
    """The workflow cannot be turned into a prompt; names the node when one is to blame."""

    def __init__(self, message: str, node_id=None, node_type: str | None = None):
        where = f"node {node_id} ({node_type}): " if node_id is not None else ""
        super().__init__(where + message)
        self.node_id = None if node_id is None else str(node_id)
        self.node_type = node_type
        self.message = message


@dataclass(frozen=True)
class Widget:
    """One widget of a node: its input name, how many companion values the editor stores after
    its value, and its default (used when a workflow predates the widget)."""

    name: str
    extras: int
    default: object = None


# -- node definitions ----------------------------------------------------------------------------


def _spec(spec) -> tuple[object, dict]:
    if isinstance(spec, (list, tuple)) and spec:
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        return spec[0], opts
    return spec, {}


def _type_name(kind) -> str:
    # ComfyUI's IO enum members are str subclasses; a list is a V1 combo.
    if isinstance(kind, (list, tuple)):
        return "COMBO"
    if isinstance(kind, enum.Enum):
        kind = kind.value
    return str(kind)


def ordered_inputs(input_types: dict):
    """(name, type, options, optional) for every required then optional input, in definition order."""
    for section, optional in (("required", False), ("optional", True)):
        for name, spec in (input_types.get(section) or {}).items():
            kind, opts = _spec(spec)
            yield name, kind, opts, optional


def is_widget(kind, opts: dict) -> bool:
    if opts.get("forceInput"):
        return False
    return _type_name(opts.get("widgetType") or kind) in WIDGET_TYPES


def _default(kind, opts: dict):
    if "default" in opts:
        return opts["default"]
    if isinstance(kind, (list, tuple)):
        return kind[0] if kind else None
    if _type_name(kind) == "COMBO":
        options = opts.get("options") or []
        return options[0] if options else None
    return {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}.get(_type_name(kind))


def widget_extras(name: str, kind, opts: dict) -> int:
    """Companion values the editor stores right after this widget's value."""
    type_name = _type_name(kind)
    extras = 0
    control = opts.get("control_after_generate")
    if type_name == "INT":
        if control if control is not None else name in SEED_NAMES:
            extras += 1
    elif type_name == "COMBO":
        if control:
            extras += 2  # the control choice and its filter string
    elif control:
        extras += 1
    if type_name == "COMBO" and any(opts.get(key) for key in UPLOAD_OPTIONS):
        extras += 1  # the upload button
    return extras


def widget_list(input_types: dict, include_force_input: bool = False) -> list[Widget]:
    out = []
    for name, kind, opts, _ in ordered_inputs(input_types):
        if is_widget(kind, opts) or (
            include_force_input
            and opts.get("forceInput")
            and _type_name(opts.get("widgetType") or kind) in WIDGET_TYPES
        ):
            extras = 0 if opts.get("forceInput") else widget_extras(name, kind, opts)
            out.append(Widget(name, extras, _default(kind, opts)))
    return out


def socket_list(input_types: dict) -> list[tuple[str, str, bool]]:
    """(name, type, optional) of the inputs the editor draws as sockets, in its order."""
    return [
        (name, _type_name(kind), optional)
        for name, kind, opts, optional in ordered_inputs(input_types)
        if not is_widget(kind, opts)
    ]


def widget_value_count(input_types: dict) -> int:
    """How many entries a node's widgets_values has in a workflow saved by the editor."""
    return sum(1 + w.extras for w in widget_list(input_types))


class HostDefinitions:
    """Node definitions from a booted ComfyUI's ``nodes`` module (core nodes and custom packs)."""

    def __init__(self, nodes_module):
        self.nodes = nodes_module
        self._cache: dict[str, dict] = {}

    def known(self, class_type: str) -> bool:
        return class_type in self.nodes.NODE_CLASS_MAPPINGS

    def input_types(self, class_type: str) -> dict | None:
        cls = self.nodes.NODE_CLASS_MAPPINGS.get(class_type)
        if cls is None:
            return None
        if class_type not in self._cache:
            self._cache[class_type] = cls.INPUT_TYPES()
        return self._cache[class_type]

    def display_name(self, class_type: str) -> str:
        cls = self.nodes.NODE_CLASS_MAPPINGS.get(class_type)
        name = self.nodes.NODE_DISPLAY_NAME_MAPPINGS.get(class_type)
        if name is None and cls is not None and hasattr(cls, "GET_SCHEMA"):
            name = getattr(cls.GET_SCHEMA(), "display_name", None)
        return name or class_type

    def outputs(self, class_type: str) -> list[tuple[str, str]]:
        """(name, type) per output, named as the editor names output slots."""
        cls = self.nodes.NODE_CLASS_MAPPINGS[class_type]
        types = [_type_name(t) for t in (getattr(cls, "RETURN_TYPES", None) or ())]
        names = list(getattr(cls, "RETURN_NAMES", None) or types)
        return list(zip(names, types))


class TableDefinitions:
    """Node definitions from a plain table {class_type: INPUT_TYPES dict} (tests, offline use)."""

    def __init__(self, table: dict, display_names: dict | None = None):
        self.table = table
        self.display_names = display_names or {}

    def known(self, class_type):
        return class_type in self.table

    def input_types(self, class_type):
        return self.table.get(class_type)

    def display_name(self, class_type):
        return self.display_names.get(class_type, class_type)


# -- formats -------------------------------------------------------------------------------------


def is_api_prompt(data) -> bool:
    return (
        isinstance(data, dict) and bool(data) and all(isinstance(v, dict) and "class_type" in v for v in data.values())
    )


def is_ui_workflow(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def link_table(workflow: dict) -> dict[int, tuple]:
    """link id -> (origin_id, origin_slot, target_id, target_slot, type); both serialised forms."""
    table = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            table[link["id"]] = (
                link["origin_id"],
                link["origin_slot"],
                link["target_id"],
                link["target_slot"],
                link.get("type"),
            )
        elif isinstance(link, (list, tuple)) and len(link) >= 5:
            table[link[0]] = (link[1], link[2], link[3], link[4], link[5] if len(link) > 5 else None)
    return table


def types_compatible(a, b) -> bool:
    """LiteGraph's isValidConnection: '*' / empty match anything; comma lists match on any member."""
    if not a or not b or a == "*" or b == "*":
        return True
    a, b = str(a).lower(), str(b).lower()
    if a == b:
        return True
    return bool(set(a.split(",")) & set(b.split(",")))


def _wrap(value):
    # The editor wraps list values so they are not read as links; ComfyUI unwraps them.
    return {"__value__": value} if isinstance(value, list) else value


# -- UI -> API -----------------------------------------------------------------------------------


class _Graph:
    def __init__(self, workflow: dict):
        self.workflow = workflow
        self.nodes = {}
        for node in workflow["nodes"]:
            key = str(node.get("id"))
            if key in self.nodes:
                raise ConversionError(f"duplicate node id {key}")
            self.nodes[key] = node
        self.links = link_table(workflow)
        subgraphs = (workflow.get("definitions") or {}).get("subgraphs") or []
        self.subgraph_ids = {s.get("id") for s in subgraphs if isinstance(s, dict)}

    def node(self, node_id):
        node = self.nodes.get(str(node_id))
        if node is None:
            raise ConversionError(f"a link refers to node {node_id}, which is not in the workflow")
        return node

    def link(self, link_id, node):
        link = self.links.get(link_id)
        if link is None:
            raise ConversionError(
                f"input refers to link {link_id}, which is not in the workflow", node.get("id"), node.get("type")
            )
        return link

    # Mirrors ExecutableNodeDTO.resolveInput / resolveOutput. Returns ("link", node_id, slot),
    # ("value", v), or None (nothing to connect).
    def resolve_input(self, node, slot: int, visited: set, type_=None):
        key = (str(node["id"]), "I", slot)
        if key in visited:
            raise ConversionError(f"circular link while resolving input {slot}", node.get("id"), node.get("type"))
        visited.add(key)
        inputs = node.get("inputs") or []
        if slot >= len(inputs):
            raise ConversionError(f"no input slot {slot}", node.get("id"), node.get("type"))
        link_id = inputs[slot].get("link")
        if link_id is None:
            return None
        origin_id, origin_slot, _, _, _ = self.link(link_id, node)
        return self.resolve_output(
            self.node(origin_id), origin_slot, type_ if type_ is not None else inputs[slot].get("type"), visited
        )

    def resolve_output(self, node, slot: int, type_, visited: set):
        key = (str(node["id"]), "O", slot)
        if key in visited:
            raise ConversionError(f"circular link while resolving output {slot}", node.get("id"), node.get("type"))
        visited.add(key)
        if node.get("mode", MODE_NORMAL) == MODE_BYPASS:
            index = self.bypass_slot(node, slot, type_)
            if index < 0:
                return None
            return self.resolve_input(node, index, visited)
        node_type = node.get("type")
        if node_type == "PrimitiveNode":
            values = node.get("widgets_values") or []
            if not values:
                raise ConversionError("primitive node has no value", node.get("id"), node_type)
            return ("value", values[0])
        if node_type in VIRTUAL_TYPES:
            inputs = node.get("inputs") or []
            if slot < len(inputs) and inputs[slot].get("link") is not None:
                return self.resolve_input(node, slot, visited, type_)
            return None
        return ("link", str(node["id"]), int(slot))

    @staticmethod
    def bypass_slot(node, slot: int, type_) -> int:
        inputs = node.get("inputs") or []
        outputs = node.get("outputs") or []
        if type_ in ("*", ""):
            return slot if len(inputs) > slot else 0
        output_type = outputs[slot].get("type") if slot < len(outputs) else None
        if slot < len(inputs):
            t = inputs[slot].get("type")
            if types_compatible(t, output_type) and types_compatible(t, type_):
                return slot
        for i, inp in enumerate(inputs):
            if inp.get("type") == type_:
                return i
        for i, inp in enumerate(inputs):
            if types_compatible(inp.get("type"), output_type) and types_compatible(inp.get("type"), type_):
                return i
        return -1


def map_widget_values(node: dict, input_types: dict, warnings: list | None = None) -> dict:
    """{input name: value} for a node's widgets_values, companion values skipped."""
    values = node.get("widgets_values")
    widgets = widget_list(input_types)
    node_id, node_type = node.get("id"), node.get("type")
    if values is None:
        values = []
    if isinstance(values, dict):  # some nodes save widgets by name
        return {w.name: values[w.name] for w in widgets if w.name in values}
    expected = sum(1 + w.extras for w in widgets)
    if len(values) != expected:
        legacy = widget_list(input_types, include_force_input=True)
        if len(legacy) != len(widgets) and len(values) == sum(1 + w.extras for w in legacy):
            # Saved before the editor stopped giving forceInput inputs a widget (frontend 1.16).
            names = {w.name for w in widgets}
            out, i = {}, 0
            for w in legacy:
                if w.name in names:
                    out[w.name] = values[i]
                i += 1 + w.extras
            return out
        if len(values) > expected:
            names = ", ".join(f"{w.name}" + (f" (+{w.extras})" if w.extras else "") for w in widgets) or "none"
            raise ConversionError(
                f"widgets_values has {len(values)} entries but the node's definition has {expected} "
                f"widget values ({names}); was the workflow saved with another version of the node?",
                node_id,
                node_type,
            )
    out, i = {}, 0
    for w in widgets:
        if i < len(values):
            out[w.name] = values[i]
        else:
            out[w.name] = w.default
            if warnings is not None:
                warnings.append(
                    f"node {node_id} ({node_type}): no saved value for '{w.name}', using its default {w.default!r}"
                )
        i += 1 + w.extras
    return out


def ui_to_api(workflow: dict, definitions, warnings: list | None = None) -> dict:
    """The API-format prompt the editor would queue for this UI-format workflow."""
    if not is_ui_workflow(workflow):
        raise ConversionError("not a UI-format workflow (no 'nodes' and 'links')")
    graph = _Graph(workflow)
    prompt: dict[str, dict] = {}
    for key, node in graph.nodes.items():
        node_type = node.get("type")
        mode = node.get("mode", MODE_NORMAL)
        if node_type in graph.subgraph_ids:
            raise ConversionError(
                "subgraphs are not supported; unpack the subgraph in the editor "
                "(right-click > Unpack Subgraph) and save again",
                key,
                node_type,
            )
        if node_type in VIRTUAL_TYPES or mode in (MODE_MUTED, MODE_BYPASS):
            continue
        if isinstance(node_type, str) and node_type.startswith(("workflow>", "workflow/")):
            raise ConversionError(
                "legacy group nodes are not supported; convert the group node back "
                "to nodes in the editor and save again",
                key,
                node_type,
            )
        input_types = definitions.input_types(node_type)
        if input_types is None:
            raise ConversionError(
                "unknown node type (is the custom node pack that provides it installed?)", key, node_type
            )
        inputs = {name: _wrap(value) for name, value in map_widget_values(node, input_types, warnings).items()}
        for slot, inp in enumerate(node.get("inputs") or []):
            if inp.get("link") is None:
                continue
            resolved = graph.resolve_input(node, slot, set())
            if resolved is None:
                continue
            if resolved[0] == "value":
                inputs[inp["name"]] = _wrap(resolved[1])
            else:
                inputs[inp["name"]] = [resolved[1], resolved[2]]
        title = node.get("title") or definitions.display_name(node_type)
        prompt[key] = {"inputs": inputs, "class_type": node_type, "_meta": {"title": title}}
    # As the editor does: inputs wired to nodes that are not in the prompt (muted) disappear.
    for entry in prompt.values():
        for name, value in list(entry["inputs"].items()):
            if isinstance(value, list) and len(value) == 2 and value[0] not in prompt:
                del entry["inputs"][name]
    return prompt


def load_prompt(data: dict, definitions, warnings: list | None = None) -> dict:
    """API-format prompt from either format (an API prompt is copied as is)."""
    if is_ui_workflow(data):
        return ui_to_api(data, definitions, warnings)
    if isinstance(data, dict) and is_api_prompt(data.get("prompt")):
        data = data["prompt"]
    if is_api_prompt(data):
        return copy.deepcopy({str(k): v for k, v in data.items()})
    raise ConversionError(
        "neither a UI-format workflow (nodes/links) nor an API-format prompt ({id: {class_type, inputs}})"
    )


# -- edits the runner makes ----------------------------------------------------------------------


def parse_value(text: str):
    """A --set value: JSON when it parses (5, 2.5, true, "x", [..]), else the text itself."""
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text


def parse_override(text: str) -> tuple[str, str, object]:
    """'NODE.input=value' -> (node, input, value). NODE is an id, a title or a class type; the input
    name is what follows the last dot before '='."""
    target, sep, value = text.partition("=")
    node, dot, name = target.rpartition(".")
    if not sep or not dot or not node.strip() or not name.strip():
        raise ValueError(f"--set expects NODE.input=value (NODE: id, title or type), got {text!r}")
    return node.strip(), name.strip(), parse_value(value)


def find_nodes(prompt: dict, selector: str) -> list[str]:
    """Node ids for an id, else an exact title, else a class type, else a case-insensitive title."""
    if selector in prompt:
        return [selector]
    for match in (
        lambda e: (e.get("_meta") or {}).get("title") == selector,
        lambda e: e.get("class_type") == selector,
        lambda e: str((e.get("_meta") or {}).get("title", "")).lower() == selector.lower(),
    ):
        found = [k for k, e in prompt.items() if match(e)]
        if found:
            return found
    return []


def apply_overrides(prompt: dict, overrides, definitions=None) -> list[str]:
    """Set inputs by node id / title / type; a value replaces a link. Returns lines saying what was set."""
    done = []
    for node_sel, name, value in overrides:
        ids = find_nodes(prompt, node_sel)
        if not ids:
            titles = sorted(
                {f"{k} ({(e.get('_meta') or {}).get('title', e['class_type'])})" for k, e in prompt.items()}
            )
            raise ConversionError(
                f"--set {node_sel}.{name}: no node with that id, title or type; nodes: " + ", ".join(titles)
            )
        for node_id in ids:
            entry = prompt[node_id]
            if definitions is not None:
                input_types = definitions.input_types(entry["class_type"]) or {}
                names = [n for n, *_ in ordered_inputs(input_types)]
                if names and name not in names:
                    raise ConversionError(
                        f"--set: no input '{name}'; its inputs are: {', '.join(names)}", node_id, entry["class_type"]
                    )
            entry["inputs"][name] = _wrap(value)
            done.append(f"node {node_id} ({entry['class_type']}).{name} = {value!r}")
    return done


def seed_inputs(prompt: dict) -> list[tuple[str, str]]:
    """(node id, input) of every seed / noise_seed given as a number."""
    return [
        (k, name)
        for k, e in prompt.items()
        for name in SEED_NAMES
        if isinstance(e["inputs"].get(name), int) and not isinstance(e["inputs"].get(name), bool)
    ]


def with_seed_offset(prompt: dict, offset: int) -> dict:
    """A copy with every numeric seed / noise_seed advanced by offset (wrapping at 2**64)."""
    out = copy.deepcopy(prompt)
    for node_id, name in seed_inputs(out):
        out[node_id]["inputs"][name] = (out[node_id]["inputs"][name] + offset) % (SEED_MAX + 1)
    return out


def demo_variant(variant: str, model_name: str) -> str:
    """Which demo DiT stands in for a Z-Image Loader (ZINodesLoader): 'base' or 'turbo', as the loader would decide
    from the variant widget and the file name (the demo files carry no real metadata)."""
    variant = str(variant or "auto").strip().lower()
    if variant in ("turbo", "base"):
        return variant
    from ..core.variants import detect_variant

    name = re.sub(r"[\\/]+$", "", str(model_name or "")).replace("[checkpoint] ", "")
    return detect_variant("auto", None, name).variant.name


def use_demo_models(prompt: dict, names: dict) -> list[str]:
    """Point every Z-Image Loader (and every input in DEMO_STANDINS, e.g. the LoRA node's file) at the
    demo files (names from demo_weights.write_demo_models)."""
    done = []
    for node_id, entry in prompt.items():
        if entry.get("class_type") != ZIMAGE_LOADER:
            continue
        inputs = entry["inputs"]
        which = demo_variant(inputs.get("variant", "auto"), inputs.get("diffusion_model"))
        before = inputs.get("diffusion_model")
        inputs["diffusion_model"] = names[which]
        inputs["text_encoder"] = names["text_encoder"]
        inputs["vae"] = names["vae"]
        done.append(f"node {node_id} ({ZIMAGE_LOADER}): {before!r} -> demo {which} model {names[which]!r}")
    for node_id, entry in prompt.items():
        for (class_type, name), role in DEMO_STANDINS.items():
            if entry.get("class_type") == class_type and role in names and name in entry["inputs"]:
                before = entry["inputs"][name]
                entry["inputs"][name] = names[role]
                done.append(f"node {node_id} ({class_type}): {before!r} -> demo {role} {names[role]!r}")
    return done


def model_file_inputs(prompt: dict, workflow: dict | None = None) -> list[dict]:
    """Model files that nodes other than the Z-Image Loader load: [{node_id, class_type, input, name,
    directory (None when unknown)}]. Directories from the core loader table, else from the workflow's
    properties.models entries."""
    declared = {}
    if workflow and is_ui_workflow(workflow):
        for node in workflow["nodes"]:
            for model in (node.get("properties") or {}).get("models") or []:
                if isinstance(model, dict) and model.get("name"):
                    declared[(str(node.get("id")), model["name"])] = model.get("directory")
    found = []
    for node_id, entry in prompt.items():
        ct = entry.get("class_type")
        if ct == ZIMAGE_LOADER:
            continue
        for name, value in entry["inputs"].items():
            if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES):
                directory = CORE_MODEL_INPUTS.get((ct, name)) or declared.get((node_id, value))
                found.append(
                    {"node_id": node_id, "class_type": ct, "input": name, "name": value, "directory": directory}
                )
    return found


def saved_files(outputs: dict, kinds=("images", "gifs", "videos", "audio")) -> list[dict]:
    """The files a run's UI outputs name: [{node_id, filename, subfolder, type}]."""
    files = []
    for node_id, ui in (outputs or {}).items():
        for kind in kinds:
            for item in ui.get(kind) or []:
                if isinstance(item, dict) and "filename" in item:
                    files.append(
                        {
                            "node_id": node_id,
                            "filename": item["filename"],
                            "subfolder": item.get("subfolder", ""),
                            "type": item.get("type", "output"),
                        }
                    )
    return files

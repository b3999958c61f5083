"""What the pack's nodes need from ComfyUI so that the text they send back (the loader's variant,
the Turbo sampler's and the guider's warnings) reaches the editor even when the result comes from
ComfyUI's cache (web/js/node_messages.js shows it)."""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

# ComfyUI re-sends a cached node's UI output only for output nodes, and from v0.3x on also for nodes
# whose schema says `has_intermediate_output`. That flag is the public way for a non-output node;
# hosts whose Schema lacks it (v0.8.0) never re-send it, and the editor extension falls back to the
# text it already holds for the node.
_FIELDS = {f.name for f in dataclasses.fields(io.Schema)}
SCHEMA_OPTIONS = {"has_intermediate_output": True} if "has_intermediate_output" in _FIELDS else {}

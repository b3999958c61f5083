"""A test instrument that the host tests install, as a custom node, beside the pack in the ComfyUI
server they start: it counts the Z-Image DiT's forward calls inside the server (the shared
tools/forward_spy.py) and serves the counts over HTTP. It adds no nodes."""

import sys
from pathlib import Path

from aiohttp import web
from server import PromptServer

sys.path.append(str(Path(__file__).resolve().parents[2] / "tools" / "site"))
from zimage_nodes.tools import forward_spy as _forward_spy  # noqa: E402

NODE_CLASS_MAPPINGS = {}
_active = {"spy": None}
routes = PromptServer.instance.routes


@routes.post("/zimage_test_probe/forward_spy/start")
async def start(request):
    if _active["spy"] is None:
        _active["spy"] = _forward_spy.ForwardSpy().__enter__()
    _active["spy"].batches.clear()
    return web.json_response({"batches": []})


@routes.get("/zimage_test_probe/forward_spy")
async def read(request):
    spy = _active["spy"]
    return web.json_response({"active": spy is not None, "batches": list(spy.batches) if spy else []})


@routes.post("/zimage_test_probe/forward_spy/stop")
async def stop(request):
    spy, _active["spy"] = _active["spy"], None
    if spy is not None:
        spy.__exit__(None, None, None)
    return web.json_response({"batches": list(spy.batches) if spy else []})

"""A test instrument that the pipeline host tests install, as a custom node, beside the pack in the
ComfyUI servers they start: an image source that holds its prompt running until the test releases
it (or ComfyUI interrupts it). With it a test catches a job's items running, queued behind one
another or never started, whenever it wants, without computing anything and without a sleep.

    GET  /zimage_test_hold          {"holding": prompts held now, "released": bool}
    POST /zimage_test_hold/release  every hold, now and later, passes at once
    POST /zimage_test_hold/reset    holds hold again
"""

import threading

import comfy.model_management
import torch
from aiohttp import web
from server import PromptServer

_state = {"holding": 0}
_released = threading.Event()
_lock = threading.Lock()


class ZImageTestHold:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                "hold": ("BOOLEAN", {"default": True}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "testing"

    @classmethod
    def IS_CHANGED(cls, **inputs):
        return float("nan")  # never cached: every prompt of a test holds (or passes) on its own

    def run(self, seed, hold):
        if hold:
            with _lock:
                _state["holding"] += 1
            try:
                while not _released.wait(0.02):
                    comfy.model_management.throw_exception_if_processing_interrupted()
            finally:
                with _lock:
                    _state["holding"] -= 1
        # A tiny image that differs by seed, so that each item's file is its own.
        return (torch.full((1, 8, 8, 3), (seed % 251) / 255.0),)


NODE_CLASS_MAPPINGS = {"ZImageTestHold": ZImageTestHold}
routes = PromptServer.instance.routes


@routes.get("/zimage_test_hold")
async def state(request):
    return web.json_response({"holding": _state["holding"], "released": _released.is_set()})


@routes.post("/zimage_test_hold/release")
async def release(request):
    _released.set()
    return web.json_response({"released": True})


@routes.post("/zimage_test_hold/reset")
async def reset(request):
    _released.clear()
    return web.json_response({"released": False})

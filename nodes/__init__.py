"""ComfyUI glue for Z-Image Nodes. Imported only by the pack's comfy_entrypoint, inside ComfyUI."""

from comfy_api.latest import ComfyExtension, io

from .guider import ZImageCFGGuider
from .loader import ZImageLoader
from .lora import ZImageLoRA
from .nag import ZImageNAG
from .negative_prompt import ZImageNegativePrompt
from .scheduler import ZImageScheduler
from .turbo_sampler import ZImageTurboSampler

NODES = [
    ZImageLoader,
    ZImageCFGGuider,
    ZImageTurboSampler,
    ZImageNegativePrompt,
    ZImageScheduler,
    ZImageNAG,
    ZImageLoRA,
]


class ZImageExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES

"""Z-Image Nodes: a ComfyUI custom node pack for Z-Image and Z-Image-Turbo.

ComfyUI loads this file through its custom node loader and calls `comfy_entrypoint`. Outside
ComfyUI the import succeeds and registers nothing: the node glue imports the host lazily, so the
host-free `core` package stays usable (and testable) on its own.
"""

# The browser side: shows the messages the nodes send back on the nodes themselves (web/js).
WEB_DIRECTORY = "./web/js"


async def comfy_entrypoint():
    # Imported here, not at module level: `nodes` needs comfy_api, which exists only in the host.
    from .nodes import ZImageExtension

    return ZImageExtension()

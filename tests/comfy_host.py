"""Host harness: finds a ComfyUI checkout, boots it in-process on the CPU and loads the pack through
ComfyUI's own custom-node loader. Without a host, tests marked `host` are skipped with the reason,
and the reason is printed in the run's header."""
import sys

import pytest

zimage = sys.modules["zimage_nodes"]
from zimage_nodes import headless  # noqa: E402

COMFYUI, HOW = headless.find_comfyui()


def pytest_report_header(config):
    if COMFYUI is None:
        return f"ComfyUI host: none, host tests will be skipped ({HOW})"
    return f"ComfyUI host: {COMFYUI} ({HOW})"


def pytest_collection_modifyitems(config, items):
    if COMFYUI is not None:
        return
    skip = pytest.mark.skip(reason=f"needs a ComfyUI checkout: {HOW}")
    for item in items:
        if "host" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def host(tmp_path_factory):
    if COMFYUI is None:
        pytest.skip(f"needs a ComfyUI checkout: {HOW}")
    out = tmp_path_factory.mktemp("comfy_output")
    return headless.boot(COMFYUI, cpu=True, output_dir=out)

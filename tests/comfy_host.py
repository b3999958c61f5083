"""Host harness: finds a ComfyUI checkout, boots it in-process on the CPU and loads the pack through
ComfyUI's own custom-node loader. Without a host, tests marked `host` are skipped with the reason,
and the reason is printed in the run's header."""

import sys

import pytest

zimage = sys.modules["zimage_nodes"]
from zimage_nodes.tools import headless  # noqa: E402

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


@pytest.fixture(scope="session")
def demo_models(host, tmp_path_factory):
    """Tiny random-weight Z-Image files (real key layouts) registered as ComfyUI model folders."""
    from zimage_nodes.tools import demo_weights

    root = tmp_path_factory.mktemp("models")
    names = demo_weights.write_demo_models(root)
    for kind in ("diffusion_models", "text_encoders", "vae", "checkpoints"):
        (root / kind).mkdir(exist_ok=True)
        host.add_model_folder(kind, root / kind)
    return root, names


@pytest.fixture
def forward_spy(host, monkeypatch):
    """Records the batch size of every Z-Image DiT forward (ComfyUI's NextDiT)."""
    import comfy.ldm.lumina.model as lumina

    calls = []
    original = lumina.NextDiT.forward

    def spy(self, x, *args, **kwargs):
        calls.append(x.shape[0])
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(lumina.NextDiT, "forward", spy)
    return calls


@pytest.fixture(scope="session")
def pack_nodes(host):
    """The pack's `nodes` package as ComfyUI loaded it (the same module objects the graph uses)."""
    import importlib

    return importlib.import_module(str(headless.PACK_DIR).replace(".", "_x_") + ".nodes")

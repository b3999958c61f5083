import pytest

pytestmark = pytest.mark.host


def test_pack_loads_through_comfyui_custom_node_loader(host):
    assert host.version == "0.8.0"
    assert host.pack_loaded, "ComfyUI's load_custom_node reported an import failure for the pack"

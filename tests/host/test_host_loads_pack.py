"""The pack loads into the ComfyUI it runs on, in process and in that checkout's own server, and
every node id it registers is its own: none is already taken by core ComfyUI (API nodes included)."""

import asyncio

import pytest

pytestmark = pytest.mark.host


def pack_node_classes(pack_nodes) -> dict:
    """The pack's node ids as the pack itself declares them (its V3 extension's node list)."""
    classes = asyncio.run(pack_nodes.ZImageExtension().get_node_list())
    return {cls.GET_SCHEMA().node_id: cls for cls in classes}


def test_pack_loads_through_comfyui_custom_node_loader(host):
    import comfyui_version
    from comfy_host import COMFYUI

    assert host.version == comfyui_version.__version__  # read from the checkout under test
    assert host.path == COMFYUI
    assert host.pack_loaded, "ComfyUI's load_custom_node reported an import failure for the pack"


def test_every_node_id_is_new_to_the_host_and_maps_to_the_pack(host, pack_nodes):
    declared = pack_node_classes(pack_nodes)
    assert declared and all(node_id.startswith("ZINodes") for node_id in declared), sorted(declared)
    assert not set(declared) & host.core_node_ids, "node ids already registered by core ComfyUI"
    assert sorted(declared) == host.pack_nodes
    for node_id, cls in declared.items():
        assert host.node_class(node_id) is cls, node_id


def test_the_server_serves_the_pack_nodes_from_the_pack(host, comfy_client, pack_nodes):
    stats = comfy_client.system_stats()
    assert stats["system"]["comfyui_version"] == host.version
    info = comfy_client.object_info()
    declared = pack_node_classes(pack_nodes)
    for node_id in declared:
        assert node_id in info, node_id
        module = info[node_id]["python_module"]
        assert module.startswith("custom_nodes.") and module != "nodes", (node_id, module)
        assert info[node_id]["category"] == "Z-Image"
    # Core nodes in the server's list come from ComfyUI itself, never from the pack.
    core_in_server = {k for k, v in info.items() if not v["python_module"].startswith("custom_nodes.")}
    assert not core_in_server & set(declared)

"""Checkpoint inspection from safetensors headers: classification, config inference, errors,
and the promise that tensor data is never read."""

import dataclasses
import json
import os
import random
import struct
import time

import pytest
import tiny_models as tm
import torch

from zimage_nodes.core import keys, model_kinds, safetensors_header
from zimage_nodes.core.model_configs import Qwen3Config, ZImageDiTConfig
from zimage_nodes.core.model_errors import REASONS, CheckpointError, ComfyConfigError, MissingShardError
from zimage_nodes.core.model_inspection import inspect_model
from zimage_nodes.core.safetensors_header import read_header

# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def tiny_diffusers_sd():
    return tm.diffusers_transformer(seed=1, **tm.TINY).state_dict()


def write(path, shapes_or_tensors, metadata=None):
    sd = {
        k: (v if isinstance(v, torch.Tensor) else torch.zeros(v, dtype=torch.float16))
        for k, v in shapes_or_tensors.items()
    }
    tm.save_safetensors(path, sd, metadata)
    return path


def write_sharded(folder, sd: dict, n_shards=2, name="diffusion_pytorch_model"):
    folder.mkdir(parents=True, exist_ok=True)
    names = list(sd)
    per = (len(names) + n_shards - 1) // n_shards
    weight_map = {}
    for i in range(n_shards):
        shard = f"{name}-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: sd[k] for k in names[i * per : (i + 1) * per]}
        tm.save_safetensors(folder / shard, part)
        weight_map.update({k: shard for k in part})
    index = folder / f"{name}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


# ---------------------------------------------------------------------------------------------
# Z-Image DiT in every layout


def check_tiny_config(cfg: ZImageDiTConfig, pad=True):
    assert (cfg.dim, cfg.n_layers, cfg.n_refiner_layers) == (256, 2, 1)
    assert (cfg.n_heads, cfg.head_dim, cfg.n_kv_heads) == (2, 128, 2)
    assert (cfg.cap_feat_dim, cfg.in_channels, cfg.patch_size) == (64, 16, 2)
    assert cfg.has_pad_tokens is pad


def test_zimage_comfyui_single_file(tmp_path, tiny_diffusers_sd):
    comfy = keys.diffusers_to_comfy(tiny_diffusers_sd)
    info = inspect_model(write(tmp_path / "z.safetensors", comfy, {"modelspec.title": "tiny"}))
    assert (info.kind, info.layout, info.prefix) == ("zimage_dit", "comfyui", "")
    assert info.description == "a Z-Image DiT"
    assert info.files == [str(tmp_path / "z.safetensors")]
    assert info.metadata == {"modelspec.title": "tiny"}
    assert set(info.tensors) == set(comfy)
    check_tiny_config(info.config)
    assert info.config.ffn_hidden == 682  # diffusers' int(dim / 3 * 8)
    assert info.params == sum(t.numel() for t in comfy.values()) == info.config.params


def test_zimage_full_checkpoint_with_prefix_and_components(tmp_path):
    sd = tm.prefixed(tm.zimage_comfy_shapes(**tm.TINY), "model.diffusion_model.")
    sd.update(tm.prefixed(tm.flux_vae_shapes(), "vae."))
    sd.update(tm.prefixed(tm.qwen3_te_shapes(), "text_encoders.qwen3_4b.transformer."))
    info = inspect_model(write(tmp_path / "ckpt.safetensors", sd))
    assert (info.kind, info.layout, info.prefix) == ("zimage_dit", "checkpoint", "model.diffusion_model.")
    check_tiny_config(info.config)
    assert info.components == {
        "zimage_dit": "model.diffusion_model.",
        "qwen3_text_encoder": "text_encoders.qwen3_4b.transformer.",
        "flux_vae": "vae.",
    }
    assert info.params == sum(torch.Size(s).numel() for s in tm.zimage_comfy_shapes(**tm.TINY).values())
    assert all(k.startswith("model.diffusion_model.") for k in info.model_keys())


def test_zimage_diffusers_single_file_folder_and_repo_root(tmp_path, tiny_diffusers_sd):
    transformer = tmp_path / "repo" / "transformer"
    transformer.mkdir(parents=True)
    (tmp_path / "repo" / "model_index.json").write_text("{}")
    f = write(transformer / "diffusion_pytorch_model.safetensors", tiny_diffusers_sd)
    for target in (f, transformer, tmp_path / "repo"):
        info = inspect_model(target)
        assert (info.kind, info.layout, info.prefix) == ("zimage_dit", "diffusers", ""), target
        assert info.files == [str(f)]
        check_tiny_config(info.config)


def test_zimage_diffusers_sharded(tmp_path, tiny_diffusers_sd):
    index = write_sharded(tmp_path / "repo" / "transformer", tiny_diffusers_sd)
    shards = sorted(str(p) for p in index.parent.glob("*.safetensors"))
    assert len(shards) == 2
    for target in (index, index.parent, tmp_path / "repo"):
        info = inspect_model(target)
        assert (info.kind, info.layout) == ("zimage_dit", "diffusers")
        assert sorted(info.files) == shards
        assert set(info.tensors) == set(tiny_diffusers_sd)
        assert {os.path.basename(t.file) for t in info.tensors.values()} == {os.path.basename(s) for s in shards}
        check_tiny_config(info.config)


def test_zimage_without_pad_tokens_and_with_gqa(tmp_path):
    shapes = tm.zimage_comfy_shapes(
        dim=512, n_layers=3, n_refiner_layers=2, n_heads=4, n_kv_heads=2, cap_feat_dim=32, pad_tokens=False
    )
    cfg = inspect_model(write(tmp_path / "z.safetensors", shapes)).config
    assert (cfg.dim, cfg.n_layers, cfg.n_refiner_layers, cfg.n_heads, cfg.n_kv_heads, cfg.cap_feat_dim) == (
        512,
        3,
        2,
        4,
        2,
        32,
    )
    assert cfg.has_pad_tokens is False
    unet = cfg.comfy_unet_config()
    assert "pad_tokens_multiple" not in unet and "n_refiner_layers" not in unet
    assert unet["n_kv_heads"] == 2


# The dim == 3840 branch of ComfyUI v0.8.0's detect_unet_config, written out.
COMFY_ZIMAGE_3840 = {
    "image_model": "lumina2",
    "patch_size": 2,
    "in_channels": 16,
    "dim": 3840,
    "cap_feat_dim": 2560,
    "n_layers": 30,
    "qk_norm": True,
    "n_heads": 30,
    "n_kv_heads": 30,
    "axes_dims": [32, 48, 48],
    "axes_lens": [1536, 512, 512],
    "rope_theta": 256.0,
    "ffn_dim_multiplier": 8.0 / 3.0,
    "z_image_modulation": True,
    "time_scale": 1000.0,
    "pad_tokens_multiple": 32,
}


def test_real_size_zimage_from_a_sparse_header_only_file(tmp_path):
    shapes = tm.zimage_comfy_shapes(**tm.FULL)
    size = tm.write_header_only(tmp_path / "z_image_turbo_bf16.safetensors", shapes)
    assert size > 12e9
    info = inspect_model(tmp_path / "z_image_turbo_bf16.safetensors")
    cfg = info.config
    assert (cfg.dim, cfg.n_layers, cfg.n_refiner_layers, cfg.n_heads, cfg.head_dim) == (3840, 30, 2, 30, 128)
    assert (cfg.cap_feat_dim, cfg.ffn_hidden, cfg.t_embed_hidden, cfg.adaln_dim) == (2560, 10240, 1024, 256)
    assert 6.1e9 < info.params < 6.2e9  # "6.15 B parameter single-stream DiT"
    assert cfg.comfy_unet_config() == COMFY_ZIMAGE_3840
    # Exactly the config ComfyUI builds at this size (the released model has ComfyUI's widths).
    assert dataclasses.replace(cfg, params=0) == ZImageDiTConfig.for_size(**tm.FULL)


def test_comfy_unet_config_for_the_cross_size(tmp_path):
    sd = keys.diffusers_to_comfy(tm.diffusers_transformer(seed=0, **tm.CROSS).state_dict())
    cfg = inspect_model(write(tmp_path / "cross.safetensors", sd)).config
    unet = cfg.comfy_unet_config()
    assert unet == {
        **COMFY_ZIMAGE_3840,
        "dim": 1152,
        "n_heads": 9,
        "n_kv_heads": 9,
        "n_layers": 1,
        "cap_feat_dim": 64,
        "n_refiner_layers": 1,
    }
    assert dataclasses.replace(cfg, params=0) == ZImageDiTConfig.for_size(**tm.CROSS)


def test_comfy_unet_config_refuses_sizes_comfyui_cannot_build(tmp_path, tiny_diffusers_sd):
    # diffusers at dim 256: FFN 682 (ComfyUI rounds to 768) and a 1024-wide timestep MLP (ComfyUI: 256).
    cfg = inspect_model(write(tmp_path / "d.safetensors", tiny_diffusers_sd)).config
    problems = cfg.comfy_incompatibilities()
    assert any("FFN width 682" in p for p in problems) and any("timestep MLP width 1024" in p for p in problems)
    with pytest.raises(ComfyConfigError, match="FFN width 682"):
        cfg.comfy_unet_config()
    # Head size 64: ComfyUI's rotary axes [32, 48, 48] need 128.
    shapes = tm.zimage_comfy_shapes(dim=256, n_heads=4)
    cfg = inspect_model(write(tmp_path / "h.safetensors", shapes)).config
    assert (cfg.n_heads, cfg.head_dim) == (4, 64)
    with pytest.raises(ComfyConfigError, match=r"head size 64.*axes_dims"):
        cfg.comfy_unet_config()
    # The ComfyUI-layout tiny model (ComfyUI's own widths) is fine.
    cfg = inspect_model(write(tmp_path / "ok.safetensors", tm.zimage_comfy_shapes(**tm.TINY))).config
    assert cfg.comfy_incompatibilities() == []
    assert cfg.comfy_unet_config()["n_refiner_layers"] == 1


def test_incomplete_diffusers_block_is_a_structure_error(tmp_path, tiny_diffusers_sd):
    sd = dict(tiny_diffusers_sd)
    del sd["layers.1.attention.to_v.weight"]
    with pytest.raises(CheckpointError, match=r"layers\.1\.attention") as e:
        inspect_model(write(tmp_path / "broken.safetensors", sd))
    assert e.value.reason == "bad_structure" and "broken.safetensors" in str(e.value)


# ---------------------------------------------------------------------------------------------
# Other model families


def test_lumina2_comfyui_is_not_zimage(tmp_path):
    info = inspect_model(write(tmp_path / "l.safetensors", tm.lumina2_comfy_shapes()))
    assert (info.kind, info.description, info.layout, info.config) == ("lumina2_dit", "a Lumina 2 DiT", "comfyui", None)
    # Even at Z-Image's width, the modulation structure decides.
    info = inspect_model(write(tmp_path / "l256.safetensors", tm.lumina2_comfy_shapes(dim=256)))
    assert info.kind == "lumina2_dit"


def test_lumina2_diffusers(tmp_path):
    info = inspect_model(write(tmp_path / "l.safetensors", tm.lumina2_diffusers().state_dict()))
    assert (info.kind, info.layout) == ("lumina2_dit", "diffusers")


def test_flux_dit_layouts(tmp_path):
    info = inspect_model(write(tmp_path / "flux1-dev.safetensors", tm.flux_dit_shapes()))
    assert (info.kind, info.description, info.layout) == ("flux_dit", "a Flux DiT", "comfyui")
    from diffusers import FluxTransformer2DModel

    m = FluxTransformer2DModel(
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6),
    )
    info = inspect_model(write(tmp_path / "flux_diffusers.safetensors", m.state_dict()))
    assert (info.kind, info.layout) == ("flux_dit", "diffusers")


def test_sd_unets(tmp_path):
    info = inspect_model(write(tmp_path / "sd15.safetensors", tm.sd1_unet_shapes()))
    assert (info.kind, info.description, info.layout) == ("sd1_unet", "an SD 1.x UNet", "comfyui")
    info = inspect_model(write(tmp_path / "sdxl.safetensors", tm.sdxl_unet_shapes()))
    assert (info.kind, info.description) == ("sdxl_unet", "an SDXL UNet")
    full = tm.prefixed(tm.sdxl_unet_shapes(), "model.diffusion_model.")
    full.update(tm.prefixed(tm.flux_vae_shapes(z_channels=4), "first_stage_model."))
    info = inspect_model(write(tmp_path / "sdxl_full.safetensors", full))
    assert (info.kind, info.layout, info.prefix) == ("sdxl_unet", "checkpoint", "model.diffusion_model.")
    info = inspect_model(write(tmp_path / "sdxl_diffusers.safetensors", tm.diffusers_sdxl_unet_shapes()))
    assert (info.kind, info.layout) == ("sdxl_unet", "diffusers")


def test_qwen3_text_encoder_layouts_and_config(tmp_path):
    shapes = tm.qwen3_te_shapes(lm_head=True, **tm.QWEN3_TINY)
    info = inspect_model(write(tmp_path / "qwen.safetensors", shapes))
    assert (info.kind, info.layout, info.prefix) == ("qwen3_text_encoder", "comfyui", "")
    assert info.description == "a Qwen3 text encoder"
    cfg = info.config
    assert isinstance(cfg, Qwen3Config)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (64, 3, 2, 1)
    assert (cfg.intermediate_size, cfg.vocab_size, cfg.head_dim) == (96, 512, 128)
    assert cfg.comfy_model_config() == {
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }
    info = inspect_model(
        write(tmp_path / "q_pref.safetensors", tm.prefixed(shapes, "text_encoders.qwen3_4b.transformer."))
    )
    assert (info.kind, info.layout, info.prefix) == (
        "qwen3_text_encoder",
        "checkpoint",
        "text_encoders.qwen3_4b.transformer.",
    )
    assert info.config == cfg
    # transformers' Qwen3Model drops the "model." level.
    bare = {k.removeprefix("model."): v for k, v in shapes.items()}
    info = inspect_model(write(tmp_path / "q_bare.safetensors", bare))
    assert (info.kind, info.layout, info.prefix) == ("qwen3_text_encoder", "transformers", "")
    assert info.config.hidden_size == 64


def test_qwen3_4b_real_size_header(tmp_path):
    shapes = tm.qwen3_te_shapes(**tm.QWEN3_4B)
    tm.write_header_only(tmp_path / "qwen_3_4b.safetensors", shapes)
    info = inspect_model(tmp_path / "qwen_3_4b.safetensors")
    assert info.description == "a Qwen3-4B text encoder"
    assert 3.9e9 < info.params < 4.1e9


def test_qwen3_head_dim_other_than_128_is_refused_for_comfy(tmp_path):
    cfg = inspect_model(write(tmp_path / "q.safetensors", tm.qwen3_te_shapes(head_dim=64))).config
    assert cfg.head_dim == 64
    with pytest.raises(ComfyConfigError, match="128"):
        cfg.comfy_model_config()


def test_other_text_encoders_are_not_qwen3(tmp_path):
    gemma = tm.qwen3_te_shapes()
    gemma["model.layers.0.post_feedforward_layernorm.weight"] = (64,)
    assert inspect_model(write(tmp_path / "gemma.safetensors", gemma)).kind == "unknown"


def test_vaes(tmp_path):
    info = inspect_model(write(tmp_path / "ae.safetensors", tm.flux_vae_shapes()))
    assert (info.kind, info.description, info.layout) == ("flux_vae", "a Flux VAE", "comfyui")
    info = inspect_model(write(tmp_path / "ae_diffusers.safetensors", tm.diffusers_flux_vae()))
    assert (info.kind, info.layout) == ("flux_vae", "diffusers")
    info = inspect_model(write(tmp_path / "sdxl_vae.safetensors", tm.flux_vae_shapes(z_channels=4)))
    assert info.kind == "unknown" and "4-channel VAE" in info.description
    info = inspect_model(write(tmp_path / "sd_vae_diffusers.safetensors", tm.diffusers_flux_vae(latent_channels=4)))
    assert info.kind == "unknown" and "not the 16-channel Flux VAE" in info.description


def test_unknown_model(tmp_path):
    info = inspect_model(write(tmp_path / "x.safetensors", {"foo.weight": (2, 2), "bar.bias": (2,)}))
    assert (info.kind, info.layout, info.config) == ("unknown", None, None)
    assert "foo.weight" in info.description and info.params == 6


def test_kinds_lists_exactly_what_the_inspector_returns(tmp_path):
    fakes = (
        tm.zimage_comfy_shapes(),
        tm.qwen3_te_shapes(),
        tm.flux_vae_shapes(),
        tm.sd1_unet_shapes(),
        tm.sdxl_unet_shapes(),
        tm.flux_dit_shapes(),
        tm.lumina2_comfy_shapes(),
        {"foo.weight": (2, 2)},
    )
    kinds = [inspect_model(write(tmp_path / f"{i}.safetensors", shapes)).kind for i, shapes in enumerate(fakes)]
    assert sorted(kinds) == sorted(model_kinds.KINDS)


# ---------------------------------------------------------------------------------------------
# Bad files: each has its own error, naming the file and saying what to do


def raw_file(path, data: bytes):
    path.write_bytes(data)
    return path


def valid_bytes() -> bytes:
    from safetensors.torch import save

    return save({"a": torch.arange(64, dtype=torch.float32)})


def expect(reason, path, *words):
    with pytest.raises(CheckpointError) as e:
        inspect_model(path)
    msg = str(e.value)
    assert str(path) in msg or os.path.basename(str(path)) in msg
    for w in words:
        assert w in msg, (w, msg)
    assert e.value.reason == reason and isinstance(e.value, ValueError)
    return e.value


def test_empty_file(tmp_path):
    err = expect("empty", raw_file(tmp_path / "e.safetensors", b""), "empty", "Download it again")
    assert err.reason == "empty"


def test_three_bytes(tmp_path):
    err = expect("truncated_header", raw_file(tmp_path / "t.safetensors", b"abc"), "3 bytes", "Download it again")
    assert err.reason == "truncated_header"


def test_header_length_larger_than_file(tmp_path):
    data = struct.pack("<Q", 5000) + b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}'
    err = expect("truncated_header", raw_file(tmp_path / "h.safetensors", data), "5000", "Download it again")
    assert err.reason == "truncated_header"


def test_invalid_json(tmp_path):
    body = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]'  # missing braces
    body += b" " * 3
    err = expect(
        "invalid_header",
        raw_file(tmp_path / "j.safetensors", struct.pack("<Q", len(body)) + body + b"\0" * 8),
        "not valid JSON",
    )
    assert err.reason == "invalid_header"


def test_malformed_header_entries(tmp_path):
    body = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    expect(
        "invalid_header",
        raw_file(tmp_path / "m.safetensors", struct.pack("<Q", len(body)) + body + b"\0" * 8),
        "spans 8 bytes, expected 16",
    )


def test_truncated_data(tmp_path):
    data = valid_bytes()
    err = expect(
        "truncated_data",
        raw_file(tmp_path / "cut.safetensors", data[:-100]),
        "truncated",
        f"expected file size {len(data)}",
        "Download it again",
    )
    assert err.reason == "truncated_data"


def test_torch_save_pickle(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "model.pt")
    err = expect("pickle", tmp_path / "model.pt", "pickle", "convert it to .safetensors")
    assert err.reason == "pickle"


def test_ckpt_renamed_to_safetensors(tmp_path):
    torch.save({"state_dict": {"a": torch.ones(2)}}, tmp_path / "x.ckpt")
    os.rename(tmp_path / "x.ckpt", tmp_path / "renamed.safetensors")
    expect("pickle", tmp_path / "renamed.safetensors", "zip", "convert it to .safetensors")


def test_legacy_pickle_protocol_byte(tmp_path):
    import pickle

    raw_file(tmp_path / "old.safetensors", pickle.dumps({"a": [1, 2, 3]}, protocol=2))
    expect("pickle", tmp_path / "old.safetensors", "pickle protocol", "convert it to .safetensors")


def test_pickle_extension_is_refused_even_with_safetensors_content(tmp_path):
    # ComfyUI picks torch.load by extension, so the content would be unpickled anyway.
    expect("pickle", raw_file(tmp_path / "weights.bin", valid_bytes()), ".bin", "convert it to .safetensors")


def test_random_bytes(tmp_path):
    rng = random.Random(7)
    data = bytes([0x42]) + bytes(rng.getrandbits(8) for _ in range(4095))
    err = expect("not_safetensors", raw_file(tmp_path / "noise.safetensors", data), "not a safetensors file")
    assert err.reason == "not_safetensors"


def test_gguf(tmp_path):
    expect("not_safetensors", raw_file(tmp_path / "z.gguf", b"GGUF" + b"\0" * 60), "GGUF")


def test_missing_shard(tmp_path, tiny_diffusers_sd):
    index = write_sharded(tmp_path / "transformer", tiny_diffusers_sd, n_shards=3)
    gone = "diffusion_pytorch_model-00002-of-00003.safetensors"
    os.remove(index.parent / gone)
    for target in (index, index.parent):
        with pytest.raises(MissingShardError) as e:
            inspect_model(target)
        msg = str(e.value)
        assert gone in msg and "diffusion_pytorch_model.safetensors.index.json" in msg and "2 of 3" in msg
        assert e.value.missing == (gone,) and e.value.index == str(index)
        assert e.value.reason == "missing_shard"


def test_index_that_does_not_match_its_shards(tmp_path, tiny_diffusers_sd):
    index = write_sharded(tmp_path / "t", tiny_diffusers_sd)
    data = json.loads(index.read_text())
    data["weight_map"]["ghost.weight"] = next(iter(data["weight_map"].values()))
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="ghost.weight") as e:
        inspect_model(index)
    assert e.value.reason == "invalid_index"


def test_folder_without_model_files(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("hi")
    err = expect("no_model_files", tmp_path / "notes", "no model files", "README.md", ".safetensors")
    assert err.reason == "no_model_files"
    expect("no_model_files", tmp_path / "empty", "empty")


def test_folder_with_only_pickle_weights(tmp_path):
    folder = tmp_path / "transformer"
    folder.mkdir()
    torch.save({"a": torch.ones(1)}, folder / "diffusion_pytorch_model.bin")
    expect("pickle", folder, "diffusion_pytorch_model.bin", "convert it to .safetensors")


def test_missing_path(tmp_path):
    err = expect("not_found", tmp_path / "nope.safetensors", "no such file")
    assert err.reason == "not_found"


def test_reasons_are_a_closed_set_of_tags():
    """`reason` is what a caller may branch on, so it is one of the documented tags, never free text."""
    assert len(REASONS) == len(set(REASONS)) >= 10
    with pytest.raises(ValueError, match="unknown CheckpointError reason"):
        CheckpointError("corrupt", "x.safetensors", "something", "do something")
    err = CheckpointError("empty", "x.safetensors", "the file is empty", "Download it again")
    assert str(err) == "x.safetensors: the file is empty. Download it again"
    assert (err.path, err.problem, err.advice) == ("x.safetensors", "the file is empty", "Download it again")


# ---------------------------------------------------------------------------------------------
# Only the header is ever read


def test_inspection_reads_only_the_header(tmp_path, monkeypatch):
    shapes = tm.zimage_comfy_shapes(**tm.FULL)
    path = tmp_path / "huge.safetensors"
    tm.write_header_only(path, shapes)
    # A real-size (12 GB, sparse) file: anything beyond the header would show in the byte count.
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
    size_before = os.path.getsize(path)

    read_bytes = []
    real_open = open

    class CountingFile:
        def __init__(self, f):
            self._f = f

        def read(self, n=-1):
            data = self._f.read(n)
            read_bytes.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return self._f.__exit__(*a)

    def counting_open(p, mode="r", *a, **k):
        return CountingFile(real_open(p, mode, *a, **k))

    monkeypatch.setattr(safetensors_header, "open", counting_open, raising=False)
    start = time.perf_counter()
    info = inspect_model(path)
    elapsed = time.perf_counter() - start
    assert info.kind == "zimage_dit" and info.config.dim == 3840
    assert sum(read_bytes) <= 8 + header_len
    assert size_before > 12e9 and elapsed < 5


def test_huge_sparse_file_is_fast_without_monkeypatching(tmp_path):
    # 64 GiB claimed by the header; reading any of it would take minutes or exhaust memory.
    path = tmp_path / "sparse.safetensors"
    tm.write_header_only(path, {"x_pad_token": (1, 3840), "giant": (1 << 35,)})
    start = time.perf_counter()
    tensors, _ = read_header(path)
    assert time.perf_counter() - start < 2
    assert tensors["giant"].nbytes == 1 << 36


def test_header_length_with_low_byte_0x80_is_not_mistaken_for_a_pickle(tmp_path):
    # 0x80 is also pickle's protocol marker; a real safetensors file can start with it.
    body = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    body += b" " * (0x180 - len(body))
    data = struct.pack("<Q", len(body)) + body + b"\0" * 8
    assert data[0] == 0x80
    tensors, _ = read_header(raw_file(tmp_path / "x80.safetensors", data))
    assert tensors["a"].shape == (2,)


def test_a_single_shard_resolves_to_the_whole_set(tmp_path, tiny_diffusers_sd):
    index = write_sharded(tmp_path / "transformer", tiny_diffusers_sd)
    one = index.parent / "diffusion_pytorch_model-00001-of-00002.safetensors"
    info = inspect_model(one)
    assert len(info.files) == 2 and set(info.tensors) == set(tiny_diffusers_sd)
    check_tiny_config(info.config)

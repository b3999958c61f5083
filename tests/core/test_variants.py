import dataclasses

import pytest
from diffusers_layout import cfg_to_guidance

from zimage_nodes.core.variants import BASE, TURBO, VARIANTS, Detection, Variant, detect_variant


def test_variant_defaults():
    assert (TURBO.steps, TURBO.cfg, TURBO.shift, TURBO.negative_has_effect) == (8, 1.0, 3.0, False)
    assert (BASE.steps, BASE.cfg, BASE.shift, BASE.negative_has_effect) == (28, 5.0, 6.0, True)
    assert (BASE.cfg_normalization, BASE.cfg_truncation) == (0.0, 1.0)
    assert cfg_to_guidance(BASE.cfg) == 4.0 and cfg_to_guidance(TURBO.cfg) == 0.0
    assert VARIANTS == {"turbo": TURBO, "base": BASE}
    assert all(v.name == k and v.display_name for k, v in VARIANTS.items())


def test_variant_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TURBO.steps = 4  # type: ignore[misc]
    assert isinstance(TURBO, Variant)


@pytest.mark.parametrize("choice, expected", [("turbo", TURBO), ("base", BASE), ("Base", BASE), (" TURBO ", TURBO)])
def test_explicit_choice_wins_over_everything(choice, expected):
    d = detect_variant(choice, {"modelspec.title": "Z-Image-Turbo"}, "z_image_base.safetensors")
    assert isinstance(d, Detection)
    assert (d.variant, d.source) == (expected, "explicit")
    assert expected.name in d.reason


def test_metadata_wins_over_filename():
    d = detect_variant("auto", {"modelspec.title": "Z-Image-Turbo"}, "z_image_base.safetensors")
    assert (d.variant, d.source) == (TURBO, "metadata")
    assert "modelspec.title" in d.reason and "Z-Image-Turbo" in d.reason and "'turbo'" in d.reason


@pytest.mark.parametrize(
    "metadata, expected, needle",
    [
        ({"modelspec.architecture": "z-image-turbo"}, TURBO, "modelspec.architecture"),
        ({"modelspec.description": "Distilled Z-Image, 8 steps"}, TURBO, "'distill'"),
        ({"name": "Z-Image-Turbo-bf16"}, TURBO, "name"),
        ({"zimage.variant": "base"}, BASE, "zimage.variant"),
        ({"variant": "Base"}, BASE, "variant"),
        ({"modelspec.title": "Z-Image-Base"}, BASE, "'z-image-base'"),
        ({"model_type": "zimage_base"}, BASE, "model_type"),
        ({"zimage.variant": "turbo"}, TURBO, "zimage.variant"),
    ],
)
def test_metadata_detection(metadata, expected, needle):
    d = detect_variant("auto", metadata, "model.safetensors")
    assert (d.variant, d.source) == (expected, "metadata")
    assert needle in d.reason


@pytest.mark.parametrize(
    "metadata",
    [None, {}, {"format": "pt"}, {"modelspec.title": "Z-Image"}, {"variant": 3}, {"other": "turbo"}],
)
def test_uninformative_metadata_falls_through_to_filename(metadata):
    d = detect_variant("auto", metadata, "z_image_turbo_bf16.safetensors")
    assert (d.variant, d.source) == (TURBO, "filename")


@pytest.mark.parametrize(
    "filename, expected, reason",
    [
        ("z_image_turbo_bf16.safetensors", TURBO, "file name 'z_image_turbo_bf16.safetensors' contains 'turbo'"),
        ("models/diffusion_models/Z-Image-TURBO.safetensors", TURBO, "contains 'turbo'"),
        ("models\\zimage\\base_v1.safetensors", BASE, "file name 'base_v1.safetensors' contains 'base'"),
        ("zimage_distilled_fp8.safetensors", TURBO, "contains 'distill'"),
        ("z_image_base_bf16.safetensors", BASE, "contains 'base'"),
        ("my_base_finetune.safetensors", BASE, "contains 'base'"),
        ("z_image_bf16.safetensors", BASE, "without 'turbo', so it is taken for the base model"),
        ("ZImage-fp16.safetensors", BASE, "'zimage' without 'turbo'"),
        ("Z-Image.safetensors", BASE, "'z-image' without 'turbo'"),
    ],
)
def test_filename_detection(filename, expected, reason):
    d = detect_variant("auto", None, filename)
    assert (d.variant, d.source) == (expected, "filename")
    assert reason in d.reason
    # The reason quotes the bare file name, not the folder it sits in.
    assert "models" not in d.reason


@pytest.mark.parametrize("filename", ["model.safetensors", "", "flux_dev.safetensors"])
def test_default_is_turbo_and_says_how_to_choose(filename):
    d = detect_variant("auto", {"format": "pt"}, filename)
    assert (d.variant, d.source) == (TURBO, "default")
    assert "could not tell" in d.reason
    assert "'base'" in d.reason and "'turbo'" in d.reason and "explicitly" in d.reason


@pytest.mark.parametrize("choice", ["", "Turbo2", "sdxl", None, 1])
def test_bad_choice_lists_valid_ones(choice):
    with pytest.raises(ValueError, match="auto, turbo, base"):
        detect_variant(choice, None, "z_image_turbo.safetensors")


def test_base_must_be_a_word_of_the_file_name():
    assert detect_variant("auto", None, "my_database_model.safetensors").source == "default"
    assert detect_variant("auto", None, "zimage-base-v1.safetensors").variant is BASE

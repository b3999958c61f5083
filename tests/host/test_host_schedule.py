"""The sigma grid against ComfyUI's own `simple` scheduler (what the Z-Image Scheduler replaces)."""

import pytest

from zimage_nodes.core.schedule import zimage_sigmas

pytestmark = pytest.mark.host


@pytest.mark.parametrize("shift", [3.0, 6.0])
def test_docstring_claim_about_comfyui_simple_scheduler(host, shift):
    """The module docstring's claim, checked against ComfyUI's own code: same grid when 1000 % steps
    == 0, up to ~3e-3 apart otherwise."""
    import comfy.model_sampling
    import comfy.samplers

    ms = comfy.model_sampling.ModelSamplingDiscreteFlow()
    ms.set_parameters(shift=shift, multiplier=1.0)  # what ModelSamplingAuraFlow(shift) sets
    for steps in (4, 5, 8, 10, 20, 25, 50):
        diff = (comfy.samplers.simple_scheduler(ms, steps) - zimage_sigmas(steps, shift)).abs().max().item()
        assert diff <= 2e-7, (steps, diff)
    for steps in (7, 9, 28, 30):
        diff = (comfy.samplers.simple_scheduler(ms, steps) - zimage_sigmas(steps, shift)).abs().max().item()
        assert 1e-4 < diff < 3e-3, (steps, diff)

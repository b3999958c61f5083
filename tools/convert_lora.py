"""Convert a Z-Image LoRA of any recognised trainer layout to the ComfyUI-native form, so it also
loads whole in stock ComfyUI (v0.8.0 on) and other UIs:

    python tools/convert_lora.py IN.safetensors OUT.safetensors

Keys become `diffusion_model.<module>.<part>` (diffusers module names, which ComfyUI maps onto the
fused qkv; ComfyUI's part names lora_up/lora_down/alpha/dora_scale, lokr_*, hada_*), alpha is
written as a key where the file kept it in its metadata, DoRA magnitudes become `dora_scale`.
Prints the same report as the Z-Image LoRA node. Never overwrites the input or an existing file.
Needs no ComfyUI: the module map is the released Z-Image's (dim 3840, 30 layers).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "site"))

from zimage_nodes.core.lora_convert import native_state_dict, plan_lora, zimage_shapes  # noqa: E402
from zimage_nodes.core.lora_formats import LoraFileError, read_lora_header  # noqa: E402


def convert(src: str, dst: str) -> str:
    """Write the native form of `src` to `dst`; returns the report."""
    from safetensors.torch import load_file, save_file

    if os.path.exists(dst):
        same = os.path.exists(src) and os.path.samefile(src, dst)
        what = "is the input file" if same else "exists"
        raise LoraFileError(dst, f"the output {what}", "Choose a new output file name; nothing is overwritten")
    header = read_lora_header(src)
    tensors = load_file(src)
    plan = plan_lora(src, tensors, header.metadata, zimage_shapes(), lambda k: float(tensors[k].float().reshape(-1)[0]))
    out = native_state_dict(plan, tensors)
    out.update({k: tensors[k] for k in plan.text_encoder_keys})
    metadata = {k: v for k, v in header.metadata.items() if k != "lora_adapter_metadata"}
    metadata["zimage.converted_from"] = plan.format
    save_file({k: v.contiguous() for k, v in out.items()}, dst, metadata=metadata)
    report = plan.summary()
    if any(m.dora_axis == "output" for m in plan.modules):
        report += (
            "\nnote: stock ComfyUI (v0.8.0-v0.33.0) applies DoRA with a per-row magnitude using the original "
            "weight's row norms; the Z-Image LoRA node applies it exactly"
        )
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("output")
    args = parser.parse_args(argv)
    try:
        report = convert(args.input, args.output)
    except LoraFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.output}: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Installs the test dependencies into .venv and runs the whole suite.
# With a ComfyUI checkout found ($COMFYUI_PATH, the ComfyUI this pack sits in, or ../ComfyUI),
# the environment gets ComfyUI's requirements too and the host integration tests run;
# without one they are skipped with the reason printed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${ZIMAGE_TEST_VENV:-$root/.venv}

candidates=("${COMFYUI_PATH:-}")
[ "$(basename "$(dirname "$root")")" = custom_nodes ] && candidates+=("$(dirname "$(dirname "$root")")")
candidates+=("$(dirname "$root")/ComfyUI")
comfy=""
for candidate in "${candidates[@]}"; do
  if [ -n "$candidate" ] && [ -f "$candidate/comfy/model_management.py" ] && [ -f "$candidate/execution.py" ]; then
    comfy=$(cd "$candidate" && pwd)
    break
  fi
done

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip() { "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
if [ -n "$comfy" ]; then
  echo "ComfyUI host: $comfy (installing its requirements; host tests will run)"
  # ComfyUI v0.8.0 on the CPU: these torch/torchvision builds, its requirements minus torchaudio.
  pip torch==2.14.1 torchvision==0.29.1
  grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$comfy/requirements.txt" > "$venv/comfyui-requirements.txt"
  pip -r "$venv/comfyui-requirements.txt" requests
  export COMFYUI_PATH=$comfy
else
  echo "ComfyUI host: none found (host tests will be skipped)"
  "$venv/bin/python" -c "import torch" 2>/dev/null || pip torch==2.13.0
fi
pip -e ".[test]"
exec "$venv/bin/python" -m pytest "$@"

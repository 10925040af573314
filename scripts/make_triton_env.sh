#!/usr/bin/env bash
# Creates (or reuses) .venv/triton: the Triton server shipped in the nvidia-pytriton wheel (tritonserver 2.51,
# Python backend), numpy + ONNX Runtime for the backend's models, and tritonclient for the tests' gRPC client.
# Pins: constraints/triton.txt. Usage: scripts/make_triton_env.sh -> prints the venv's python on the last line.
#
# Its own environment because no TensorFlow line can hold these pins (tritonclient[grpc] wants protobuf >= 6.30,
# nvidia-pytriton wants numpy < 2); the server runs as a separate process anyway.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$here/.venv/triton"
constraints="$here/constraints/triton.txt"
python="${PYTHON:-python3}"
stamp="$venv/.constraints.sha"
want="$(sha256sum "$constraints" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -rf "$venv"
  mkdir -p "$here/.venv/logs"
  log="$here/.venv/logs/install-triton.log"
  echo "creating $venv (pip's output: $log)" >&2
  # The Python backend stub of the wheel is built per CPython minor version (3.8-3.13).
  if ! "$python" -c 'import sys; sys.exit(not (3, 8) <= sys.version_info[:2] <= (3, 13))'; then
    echo "$python is missing or not CPython 3.8-3.13 (the nvidia-pytriton Python backend stubs exist for those only); set PYTHON=" >&2
    exit 1
  fi
  if ! { "$python" -m venv "$venv" &&
         "$venv/bin/pip" install -q --disable-pip-version-check --upgrade "pip<26" &&
         "$venv/bin/pip" install -q --disable-pip-version-check -c "$constraints" \
           nvidia-pytriton "tritonclient[http,grpc]" numpy onnxruntime; } > "$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "installing the Triton environment failed; full log: $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"

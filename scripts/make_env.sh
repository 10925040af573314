#!/usr/bin/env bash
# Creates (or reuses) .venv/tf<LINE> with the pinned set for that TensorFlow line and this package installed.
# Usage: scripts/make_env.sh 2.15|2.17|2.21   -> prints the venv's python path on the last line.
set -euo pipefail
line="$1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$here/.venv/tf$line"
constraints="$here/constraints/tf$line.txt"
case "$line" in
  2.15) extras="tf215,onnx,trt_rtx,cuda,hub,report,test" ;;
  2.17) extras="tf217,onnx,trt_rtx,cuda,hub,report,test" ;;
  2.21) extras="tf221,onnx,trt_rtx,cuda,hub,report,test" ;;
  *) echo "unknown TF line: $line (expected 2.15, 2.17 or 2.21)" >&2; exit 2 ;;
esac
stamp="$venv/.constraints.sha"
want="$(sha256sum "$constraints" "$here/setup.py" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -rf "$venv"
  mkdir -p "$here/.venv/logs"
  log="$here/.venv/logs/install-tf$line.log"
  echo "creating $venv (pip's output: $log)" >&2
  # Every package comes from the constraints file: an unpinned extra could pull numpy 2 or protobuf 5+
  # into the TF line and break `import tensorflow`.
  if ! { python3 -m venv "$venv" &&
         "$venv/bin/pip" install -q --disable-pip-version-check --upgrade "pip<26" &&
         "$venv/bin/pip" install -q --disable-pip-version-check -c "$constraints" -e "$here[$extras]"; } \
       > "$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "installing the TF $line environment failed; full log: $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"

#!/usr/bin/env bash
# The main job: train the digits classifier with TrtExport and write a full export (normal SavedModel, frozen
# graph, samples, ONNX FP32/FP16/INT8 verified, TF-TRT and TensorRT engine variants where they can run,
# TensorRT-RTX engines on any machine, a Triton repository, manifests). TF 2.17 by default, the one line where every format exists;
# `--tf=2.21` (current TensorFlow) or `--tf=2.15` picks another pinned line. Other arguments go to
# examples/train_keras.py (e.g. --epochs=3 --export_dir=/tmp/digits).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
line=2.17
args=()
for arg in "$@"; do
  case "$arg" in
    --tf=*) line="${arg#--tf=}" ;;
    *) args+=("$arg") ;;
  esac
done
python="$("$here/scripts/make_env.sh" "$line" | tail -n 1)"
cd "$here"
exec "$python" examples/train_keras.py ${args[@]+"${args[@]}"}

#!/usr/bin/env bash
# Loads a Triton repository written by tftrt_keras (`triton_repository=`: onnxruntime_onnx and tensorrt_plan
# models) in NVIDIA's Triton container on this machine's GPUs, and checks over HTTP that every model is ready.
# Needs docker with the NVIDIA container toolkit and a GPU; cannot run on the CPU-only machines of this project.
#
# Usage: scripts/run_triton_gpu.sh <triton_repository> [container tag, default 24.10]
# The tag must carry the TensorRT the plans were built with (a plan loads only in the TensorRT version and on the
# compute capability that built it): 24.10 = Triton 2.51, TensorRT 10.5.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 <triton_repository> [tag]" >&2; exit 2; }
repository="$(cd "$1" && pwd)"
tag="${2:-24.10}"
port="${TRITON_HTTP_PORT:-8000}"
timeout="${TRITON_READY_TIMEOUT:-300}"
name="tftrt-keras-triton-$$"
models=()
for dir in "$repository"/*/; do
  model="$(basename "$dir")"
  [ -f "$dir/config.pbtxt" ] && models+=("$model")
done
[ ${#models[@]} -gt 0 ] || { echo "no model (no */config.pbtxt) in $repository" >&2; exit 1; }

# --exit-on-error=false keeps the server up when a model fails to load, so each model's state is reported below.
docker run -d --rm --name "$name" --gpus all -p "127.0.0.1:$port:8000" -v "$repository:/models:ro" \
  "nvcr.io/nvidia/tritonserver:$tag-py3" \
  tritonserver --model-repository=/models --exit-on-error=false >/dev/null
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT

deadline=$((SECONDS + timeout))
until curl -sf -o /dev/null "http://127.0.0.1:$port/v2/health/live"; do
  if [ $SECONDS -ge $deadline ] || ! docker inspect "$name" >/dev/null 2>&1; then
    docker logs "$name" 2>&1 | tail -n 50 >&2 || true
    echo "tritonserver did not come up within ${timeout}s" >&2
    exit 1
  fi
  sleep 2
done

failed=0
for model in "${models[@]}"; do
  until curl -sf -o /dev/null "http://127.0.0.1:$port/v2/models/$model/ready"; do
    if [ $SECONDS -ge $deadline ]; then
      echo "NOT READY $model" >&2
      failed=1
      continue 2
    fi
    sleep 2
  done
  echo "ready     $model"
done
if [ $failed -ne 0 ]; then
  curl -s -X POST "http://127.0.0.1:$port/v2/repository/index" >&2 || true
  echo >&2
  docker logs "$name" 2>&1 | grep -E "^E|failed to load" | tail -n 40 >&2 || true
  exit 1
fi
echo "${#models[@]} models ready in nvcr.io/nvidia/tritonserver:$tag-py3"

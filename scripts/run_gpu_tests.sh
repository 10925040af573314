#!/usr/bin/env bash
# The whole test suite, `trt` tier included, inside an NVIDIA TensorFlow container (TensorFlow with TF-TRT and
# the TensorRT it is linked against, CUDA, a GPU). From the repository root on a GPU host:
#
#   docker run --gpus all --rm -v "$PWD":/src -w /src nvcr.io/nvidia/tensorflow:24.03-tf2-py3 \
#       bash scripts/run_gpu_tests.sh [pytest arguments]
#
# The container's TensorFlow must survive: a TensorFlow, Keras or tf_keras from the package index is not linked
# against the container's TensorRT, and a `tensorrt` wheel is not the one TensorFlow was built with. So:
#   step 1  this package with --no-deps (its own requirements, absl-py and numpy, are in the container);
#   step 2  the test and ONNX dependencies, by name, under a constraints file that pins every package already
#           installed to its installed version (pip fails rather than replace one);
#   step 3  tensorflow-hub with --no-deps (it requires tf-keras, which would pull a TensorFlow from the index).
# Then it checks that TensorFlow is the one it found, that TF-TRT can convert here (a run whose trt tier would
# only skip is refused; TFTRT_ALLOW_NO_TENSORRT=1 runs it anyway), and runs pytest.
#
# Environment:
#   PYTHON                      interpreter to use (default: python3, the container's)
#   TFTRT_GPU_TESTS_DRY_RUN=DIR resolve steps 1-3 with `pip install --dry-run --ignore-installed --report
#                               DIR/step<N>.json` (everything each step would install, as if into an empty
#                               environment), install nothing, run no test. tests/test_gpu_test_script.py uses
#                               it where there is no GPU.
#   TFTRT_ALLOW_NO_TENSORRT=1   run the suite even when the preflight says TF-TRT cannot convert here.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
python="${PYTHON:-python3}"
dry_run="${TFTRT_GPU_TESTS_DRY_RUN:-}"

tf_version="$("$python" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)" || {
  echo "run_gpu_tests.sh: no TensorFlow importable with $python; run it inside an NVIDIA TensorFlow container" >&2
  exit 2
}
echo "=== container TensorFlow: $tf_version"

# What the tests and the ONNX formats need beyond the container. On TensorFlow 2.15-2.17, onnx 1.18.0: 1.19+
# needs an ml_dtypes those lines cannot have (see constraints/tf2.17.txt); later lines take a current onnx.
case "$tf_version" in
  2.1[0-7].*) onnx_pin="onnx==1.18.0" ;;
  *) onnx_pin="onnx>=1.18" ;;
esac
test_deps=("pytest>=7" "pytest-timeout" "scikit-learn" "matplotlib>=3.5")
onnx_deps=("tf2onnx==1.17.0" "$onnx_pin" "onnxruntime>=1.20" "onnxconverter-common>=1.16" "sympy")
no_deps=("tensorflow-hub>=0.16")

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
constraints="$work/installed.txt"
# Every installed package at its installed version (this package itself excepted).
"$python" -m pip list --disable-pip-version-check --format=freeze \
  | grep -E '^[A-Za-z0-9_.-]+==' | grep -viE '^tftrt[-_]keras==' > "$constraints"
echo "=== pinned to the container: $(wc -l < "$constraints") packages (tensorflow, keras, numpy, protobuf ...)"

pip_install() {  # pip_install <step> <pip arguments...>
  local step="$1"; shift
  if [ -n "$dry_run" ]; then
    mkdir -p "$dry_run"
    "$python" -m pip install --disable-pip-version-check -q --dry-run --ignore-installed \
      --report "$dry_run/step$step.json" "$@"
  else
    "$python" -m pip install --disable-pip-version-check -q "$@"
  fi
}

echo "=== step 1: tftrt_keras (editable, --no-deps)"
pip_install 1 --no-deps -e "$here"
echo "=== step 2: test and ONNX dependencies, constrained to the container's packages"
pip_install 2 -c "$constraints" "${test_deps[@]}" "${onnx_deps[@]}"
echo "=== step 3: ${no_deps[*]} (--no-deps)"
pip_install 3 --no-deps -c "$constraints" "${no_deps[@]}"

if [ -n "$dry_run" ]; then
  echo "=== dry run: reports in $dry_run; nothing installed, no test run"
  exit 0
fi

after="$("$python" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)"
if [ "$after" != "$tf_version" ]; then
  echo "run_gpu_tests.sh: TensorFlow changed from $tf_version to $after during the install; refusing to test" >&2
  exit 1
fi
echo "=== preflight"
if ! "$python" -m tftrt_keras.preflight; then
  if [ "${TFTRT_ALLOW_NO_TENSORRT:-}" != "1" ]; then
    echo "run_gpu_tests.sh: TF-TRT cannot convert in this container (above), so the trt tier would only skip;" \
         "set TFTRT_ALLOW_NO_TENSORRT=1 to run the suite anyway" >&2
    exit 1
  fi
fi
echo "=== tests"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "$python" -m pytest -p no:cacheprovider -q -rs "$@"

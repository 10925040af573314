#!/usr/bin/env bash
# The GPU tiers, one NVIDIA container per TensorRT generation, each required to RUN (a skip is a failure).
#
# On a GPU host with docker and the NVIDIA container toolkit, from the repository root:
#
#   bash scripts/run_gpu_tests.sh [tftrt|trt10|trt11|all] [pytest arguments]     (default: all)
#
# runs, for each generation asked, `docker run --gpus all` of its image with this script's --inside mode:
#
#   generation  image (override)                                  TensorRT  CUDA  tier required    tests
#   tftrt       nvcr.io/nvidia/tensorflow:24.03-tf2-py3 (TFTRT_IMAGE)  8.6   12.4  tftrt           the whole suite
#   trt10       nvcr.io/nvidia/tensorrt:25.01-py3 (TRT10_IMAGE)        10.8  12.8  trt_engines     TensorRT's tests
#   trt11       nvcr.io/nvidia/tensorrt:26.06-py3 (TRT11_IMAGE)        11.x  13.x  trt_engines     TensorRT's tests
#
# Where the tags come from (read through a search of NVIDIA's published notes; no container was pulled here):
# - tensorflow:24.03-tf2-py3: the last NVIDIA TensorFlow containers carry TF-TRT with TensorRT 8.6 and CUDA 12.4
#   (issue 25 states it for 24.03); its TensorRT version was NOT confirmed from the TensorFlow release notes here.
#   The preflight below checks that TF-TRT loads, whatever the version.
# - tensorrt:25.01-py3: TensorRT 10.8.0.43 with CUDA 12.8.0.038 and Python 3.12 is what NVIDIA's Triton
#   compatibility matrix lists for the 25.01 release (tritonserver:25.01); the TensorRT container of the same
#   month was not found in the notes searched, so its version is checked at run time (major 10 or fail).
# - tensorrt:26.06-py3: NOT confirmed. TensorRT 11.0 came in 2026 Q2 and 11.1 (CUDA 13.3 by default) in June 2026
#   (NVIDIA/TensorRT release notes); no container release note naming the tag was found. Checked at run time
#   (major 11 or fail): set TRT11_IMAGE to the tag NGC lists for TensorRT 11.
#
# Inside a container (`--inside GENERATION`), nothing the container ships is replaced:
#   step 1  this package with --no-deps;
#   step 2  the test and ONNX dependencies (tftrt: constrained to every installed package's version; trt10/trt11:
#           TensorFlow and the ONNX tools at constraints/tf2.21.txt's versions, TensorRT pinned to the container's),
#           and cuda-python pinned to the container's CUDA major (12.x needs >= 12.6 for `cuda.bindings`);
#   step 3  tensorflow-hub with --no-deps (tftrt: it requires tf-keras, which would pull a TensorFlow).
# Then it checks what it found (TensorFlow unchanged and TF-TRT usable; TensorRT of the generation's major and
# unchanged, a GPU visible to cuda-python), and runs pytest with `--require-tier TIER` (tests/conftest.py): a
# test of that tier that skips FAILS, and so does a run in which none of them ran.
#
# Environment:
#   PYTHON                      interpreter to use (default: python3, the container's)
#   TFTRT_GPU_TESTS_DRY_RUN=DIR resolve steps 1-3 with `pip install --dry-run --ignore-installed --report
#                               DIR/step<N>.json`, install nothing, print the pytest command, run no test
#                               (tests/test_gpu_test_script.py).
#   TFTRT_GPU_TESTS_CUDA=X.Y    the container's CUDA version, where neither $CUDA_VERSION nor nvcc says it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
all_generations=(tftrt trt10 trt11)

image_of() {
  case "$1" in
    tftrt) echo "${TFTRT_IMAGE:-nvcr.io/nvidia/tensorflow:24.03-tf2-py3}" ;;
    trt10) echo "${TRT10_IMAGE:-nvcr.io/nvidia/tensorrt:25.01-py3}" ;;
    trt11) echo "${TRT11_IMAGE:-nvcr.io/nvidia/tensorrt:26.06-py3}" ;;
    *) echo "run_gpu_tests.sh: unknown generation '$1' (expected one of ${all_generations[*]})" >&2; return 2 ;;
  esac
}

if [ "${1:-}" != "--inside" ]; then  # --- on the host: one container per generation -----------------------------
  generations=("${all_generations[@]}")
  case "${1:-all}" in
    all) [ $# -gt 0 ] && shift ;;
    tftrt|trt10|trt11) generations=("$1"); shift ;;
  esac
  failed=()
  for generation in "${generations[@]}"; do
    image="$(image_of "$generation")"
    echo "=== $generation in $image"
    if ! docker run --gpus all --rm -v "$here":/src -w /src "$image" \
        bash scripts/run_gpu_tests.sh --inside "$generation" "$@"; then
      failed+=("$generation")
    fi
  done
  if [ ${#failed[@]} -gt 0 ]; then
    echo "run_gpu_tests.sh: FAILED: ${failed[*]}" >&2
    exit 1
  fi
  echo "run_gpu_tests.sh: passed: ${generations[*]}"
  exit 0
fi

# --- inside one container --------------------------------------------------------------------------------------
shift
generation="${1:?run_gpu_tests.sh --inside needs a generation: ${all_generations[*]}}"
shift
image_of "$generation" > /dev/null
python="${PYTHON:-python3}"
dry_run="${TFTRT_GPU_TESTS_DRY_RUN:-}"
fail() { echo "run_gpu_tests.sh ($generation): $*" >&2; exit 1; }

cuda="${TFTRT_GPU_TESTS_CUDA:-${CUDA_VERSION:-}}"
if [ -z "$cuda" ] && command -v nvcc > /dev/null; then
  cuda="$(nvcc --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')"
fi
cuda_major="${cuda%%.*}"
case "$cuda_major" in
  12) cuda_pin="cuda-python>=12.6,<13" ;;  # 12.6+: `cuda.bindings`; any 12.x driver (minor version compatibility)
  13) cuda_pin="cuda-python>=13,<14" ;;
  *) fail "cannot tell this container's CUDA version (CUDA_VERSION='${CUDA_VERSION:-}', no nvcc):" \
          "set TFTRT_GPU_TESTS_CUDA" ;;
esac
echo "=== $generation: CUDA $cuda -> $cuda_pin"

tensorrt_version() { "$python" -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true; }
trt_before="$(tensorrt_version)"
case "$generation" in
  tftrt)
    tier="tftrt"
    tests=()
    tf_before="$("$python" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)" \
      || fail "no TensorFlow importable with $python: run it in an NVIDIA TensorFlow container"
    echo "=== container TensorFlow: $tf_before, TensorRT Python: ${trt_before:-none}"
    case "$tf_before" in  # onnx 1.19+ needs an ml_dtypes TensorFlow 2.15-2.17 cannot have
      2.1[0-7].*) onnx_pin="onnx==1.18.0" ;;
      *) onnx_pin="onnx>=1.18" ;;
    esac
    constraints_from="installed"
    deps=("pytest>=7" "pytest-timeout" "scikit-learn" "matplotlib>=3.5" "tf2onnx==1.17.0" "$onnx_pin"
          "onnxruntime>=1.20" "onnxconverter-common>=1.16" "sympy" "$cuda_pin")
    ;;
  trt10|trt11)
    tier="trt_engines"
    want="${generation#trt}"
    tests=(tests/test_trt_engines_tier.py tests/test_tensorrt_format.py tests/test_trt_compat.py)
    echo "=== container TensorRT: ${trt_before:-none}"
    if [ "${trt_before%%.*}" != "$want" ]; then
      [ -n "$dry_run" ] || fail "$(image_of "$generation") has TensorRT '${trt_before:-none}', not $want.x:" \
                                "set ${generation^^}_IMAGE"
      echo "=== dry run: TensorRT $want.x required, '${trt_before:-none}' found"
    fi
    constraints_from="tensorrt"
    # TensorFlow only writes the SavedModel and the ONNX variant here; the engines are TensorRT's.
    deps=("tensorflow" "tf2onnx" "onnx" "onnxruntime" "onnxconverter-common" "pytest>=7" "pytest-timeout"
          "scikit-learn" "sympy" "$cuda_pin")
    ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
constraints="$work/constraints.txt"
# Every installed package at its version, except this package and cuda-python's, which the CUDA pin decides.
installed="$("$python" -m pip list --disable-pip-version-check --format=freeze | grep -E '^[A-Za-z0-9_.-]+==' \
             | grep -viE '^(tftrt[-_]keras|cuda[-_](python|bindings|core|pathfinder))==' || true)"
if [ "$constraints_from" = "installed" ]; then
  echo "$installed" > "$constraints"  # the container's TensorFlow, Keras, numpy, protobuf... stay as they are
else
  # The TensorRT packages stay the container's; the rest at the versions the tf2.21 line is tested with.
  { echo "$installed" | grep -iE '^(tensorrt|nvidia-tensorrt)' || true
    grep -E '^[A-Za-z0-9_.-]+==' constraints/tf2.21.txt | grep -viE '^(tensorrt|cuda[-_](python|bindings))'
  } > "$constraints"
fi
echo "=== constraints: $(wc -l < "$constraints") packages"

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
echo "=== step 2: test, ONNX and cuda-python dependencies, constrained"
pip_install 2 -c "$constraints" "${deps[@]}"
echo "=== step 3: tensorflow-hub (--no-deps)"
pip_install 3 --no-deps -c "$constraints" "tensorflow-hub>=0.16"

pytest_command=("$python" -m pytest -p no:cacheprovider -q -rs --require-tier "$tier" "${tests[@]}" "$@")
if [ -n "$dry_run" ]; then
  echo "=== dry run: reports in $dry_run; nothing installed, no test run; would run: ${pytest_command[*]}"
  exit 0
fi

[ "$(tensorrt_version)" = "$trt_before" ] \
  || fail "TensorRT changed from '$trt_before' to '$(tensorrt_version)' during the install"
if [ "$generation" = "tftrt" ]; then
  after="$("$python" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)"
  [ "$after" = "$tf_before" ] || fail "TensorFlow changed from $tf_before to $after during the install"
  echo "=== preflight"
  "$python" -m tftrt_keras.preflight \
    || fail "TF-TRT cannot convert in this container (above): the tftrt tier would only skip"
fi
echo "=== GPUs seen by cuda-python"
"$python" -c 'from tftrt_keras.formats.tensorrt import cuda_devices as c; g = c.list_gpus(); print(g); assert g' \
  || fail "cuda-python sees no GPU: the $tier tier would only skip"
echo "=== tests: ${pytest_command[*]}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" TF_FORCE_GPU_ALLOW_GROWTH=true
exec "${pytest_command[@]}"

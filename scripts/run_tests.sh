#!/usr/bin/env bash
# The test suite on every TensorFlow line (2.15: Keras 2 + Estimator + TF-TRT; 2.17: Keras 3 + tf_keras + TF-TRT;
# 2.21: current TensorFlow, Keras 3, numpy 2, ONNX route only), each in its own pinned environment, plus the
# Triton server's own environment (.venv/triton) for the serving tests. Extra arguments go to pytest.
# Ends with one line for all: "total: N passed, N failed, N skipped".
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
mkdir -p .venv/logs
status=0
passed=0; failed=0; skipped=0
echo "=== Triton server environment"
if ! triton_python="$(scripts/make_triton_env.sh | tail -n 1)"; then
  echo "the Triton environment could not be built; the Triton server tests will skip"; status=1; failed=$((failed + 1))
fi
for line in 2.15 2.17 2.21; do
  echo "=== TensorFlow $line: preparing environment"
  if ! python="$(scripts/make_env.sh "$line" | tail -n 1)"; then
    echo "environment for TF $line could not be built"; status=1; failed=$((failed + 1)); continue
  fi
  echo "=== TensorFlow $line: tests"
  log=".venv/logs/pytest-tf$line.log"
  "$python" -m pytest -p no:cacheprovider -q -rs --durations=15 "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || status=1
  summary="$(tail -n 1 "$log")"
  p=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || true)
  f=$(grep -oE '[0-9]+ (failed|error|errors)' <<<"$summary" | awk '{n += $1} END {print n + 0}')
  s=$(grep -oE '[0-9]+ skipped' <<<"$summary" | grep -oE '[0-9]+' || true)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
  if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then failed=$((failed + 1)); fi
done
echo "total: $passed passed, $failed failed, $skipped skipped"
exit $status

#!/usr/bin/env bash
# The test suite on every TensorFlow line (2.15: Keras 2 + Estimator + TF-TRT; 2.17: Keras 3 + tf_keras + TF-TRT;
# 2.21: current TensorFlow, Keras 3, numpy 2, ONNX route only), each in its own pinned environment, plus the
# Triton server's own environment (.venv/triton) for the serving tests. Extra arguments go to pytest.
#
# The environments are made one after another (pip shares one cache); the three lines' tests then run side by
# side, each in its own process with its own temporary directory, because one line keeps about one core busy
# (its time goes to child processes starting TensorFlow, waiting workers and servers): on 2 cores the three
# together take about as long as the slowest alone. TFTRT_TEST_JOBS=1 runs them one after another instead.
# Each line's output is printed whole, in line order, once it has finished; its log stays in .venv/logs.
# Ends with one line for all: "total: N passed, N failed, N skipped".
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
mkdir -p .venv/logs
lines=(2.15 2.17 2.21)
jobs="${TFTRT_TEST_JOBS:-${#lines[@]}}"
status=0
passed=0; failed=0; skipped=0
started=$SECONDS

echo "=== Triton server environment"
if ! triton_python="$(scripts/make_triton_env.sh | tail -n 1)"; then
  echo "the Triton environment could not be built; the Triton server tests will skip"; status=1; failed=$((failed + 1))
fi
declare -A python_of
for line in "${lines[@]}"; do
  echo "=== TensorFlow $line: preparing environment"
  if python="$(scripts/make_env.sh "$line" | tail -n 1)"; then
    python_of[$line]="$python"
  else
    echo "environment for TF $line could not be built"; status=1; failed=$((failed + 1))
  fi
done
echo "=== environments ready after $((SECONDS - started)) s; tests: up to $jobs line(s) at a time"

# Each line its own pytest base temp: concurrent sessions sharing /tmp/pytest-of-$USER would prune each other's.
temp_root="$(mktemp -d "${TMPDIR:-/tmp}/tftrt_keras-tests.XXXXXX")"
trap 'rm -rf "$temp_root"' EXIT
# Each line in a session of its own: the kernel shares the CPU between sessions first (autogroup), and a
# conversion worker runs at nice 19 inside its trainer's session, yielding to that trainer only. Three lines in
# one session would starve every worker behind the other lines' training, as no user's machine does.
run_line() {  # line python log -> pytest's exit code
  local line="$1" python="$2" log="$3"
  setsid --wait "$python" -m pytest -p no:cacheprovider -q -rs --durations=15 --basetemp="$temp_root/tf$line" \
    "${@:4}" > "$log" 2>&1
}

declare -A pid_of
pending=()
for line in "${lines[@]}"; do
  [ -n "${python_of[$line]:-}" ] || continue
  pending+=("$line")
done
next=0
report() {  # prints one finished line's log and adds its counts
  local line="$1" rc="$2" log=".venv/logs/pytest-tf$1.log"
  echo "=== TensorFlow $line: tests"
  cat "$log"
  [ "$rc" -eq 0 ] || status=1
  local summary p f s
  summary="$(tail -n 1 "$log")"
  p=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || true)
  f=$(grep -oE '[0-9]+ (failed|error|errors)' <<<"$summary" | awk '{n += $1} END {print n + 0}')
  s=$(grep -oE '[0-9]+ skipped' <<<"$summary" | grep -oE '[0-9]+' || true)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
  if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then failed=$((failed + 1)); fi
}
start_next() {
  local line="${pending[$next]}"
  next=$((next + 1))
  run_line "$line" "${python_of[$line]}" ".venv/logs/pytest-tf$line.log" "$@" &
  pid_of[$line]=$!
}
running=0
for ((i = 0; i < ${#pending[@]}; i++)); do
  # Results are printed in line order: wait for each line in turn, keeping up to $jobs running.
  while [ "$next" -lt "${#pending[@]}" ] && [ "$running" -lt "$jobs" ]; do
    start_next "$@"; running=$((running + 1))
  done
  line="${pending[$i]}"
  wait "${pid_of[$line]}"; rc=$?
  running=$((running - 1))
  report "$line" "$rc"
done
echo "=== all lines done after $((SECONDS - started)) s"
echo "total: $passed passed, $failed failed, $skipped skipped"
exit $status

#!/usr/bin/env bash
# The test suite on every TensorFlow line (2.15: Keras 2 + Estimator + TF-TRT; 2.17: Keras 3 + tf_keras + TF-TRT;
# 2.21: current TensorFlow, Keras 3, numpy 2, ONNX route only), each in its own pinned environment, plus the
# Triton server's own environment (.venv/triton) for the serving tests. Extra arguments go to pytest.
#
# The environments are made one after another (pip shares one cache); the three lines' tests then run side by
# side, each in its own process with its own temporary directory, because one line keeps about one core busy
# (its time goes to child processes starting TensorFlow, waiting workers and servers): on 2 cores the three
# together take about as long as the slowest alone. TFTRT_TEST_JOBS=1 runs them one after another instead.
# The slowest line (2.21: two Keras) runs in two processes (--shard=1/2, 2/2: whole test files, dealt by the weights
# in tests/shard_weights.json), so its tail does not run alone on one core once the others are done. Four processes
# on 2 cores measured best; five (2.15 split too) ran slower. TFTRT_TEST_SHARDS="2.21=2" says which lines are split
# and in how many parts ("" splits none, "2.15=2 2.21=2" splits both).
# Each part's output is printed whole, in line order, once it has finished; its log stays in .venv/logs.
# Ends with one line for all: "total: N passed, N failed, N skipped".
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
mkdir -p .venv/logs
lines=(2.15 2.17 2.21)
declare -A parts_of=()
for split in ${TFTRT_TEST_SHARDS-2.21=2}; do parts_of[${split%%=*}]="${split#*=}"; done
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
# A job is a line, or one part of a split line ("2.21:1/2").
pending=()
for line in "${lines[@]}"; do
  [ -n "${python_of[$line]:-}" ] || continue
  parts="${parts_of[$line]:-1}"
  if [ "$parts" -le 1 ]; then pending+=("$line"); else
    for ((k = 1; k <= parts; k++)); do pending+=("$line:$k/$parts"); done
  fi
done
jobs="${TFTRT_TEST_JOBS:-${#pending[@]}}"
echo "=== environments ready after $((SECONDS - started)) s; tests: ${pending[*]}, up to $jobs at a time"

# Each line its own pytest base temp: concurrent sessions sharing /tmp/pytest-of-$USER would prune each other's.
temp_root="$(mktemp -d "${TMPDIR:-/tmp}/tftrt_keras-tests.XXXXXX")"
trap 'rm -rf "$temp_root"' EXIT
# Each line in a session of its own: the kernel shares the CPU between sessions first (autogroup), and a
# conversion worker runs at nice 19 inside its trainer's session, yielding to that trainer only. Three lines in
# one session would starve every worker behind the other lines' training, as no user's machine does.
name_of() { local job="${1/:/-}"; echo "tf${job/\//of}"; }  # 2.21:1/2 -> tf2.21-1of2
run_job() {  # job python log -> pytest's exit code
  local job="$1" python="$2" log="$3" shard=()
  [ "$job" = "${job#*:}" ] || shard=("--shard=${job#*:}")
  setsid --wait "$python" -m pytest -p no:cacheprovider -q -rs --durations=15 \
    --basetemp="$temp_root/$(name_of "$job")" ${shard[@]+"${shard[@]}"} "${@:4}" > "$log" 2>&1
  local rc=$?
  # A part that the given arguments left without a test (pytest's 5) is not a failure; a whole line is.
  [ "$rc" -eq 5 ] && [ ${#shard[@]} -gt 0 ] && return 0
  return "$rc"
}

declare -A pid_of
next=0
report() {  # prints one finished job's log and adds its counts
  local job="$1" rc="$2" log=".venv/logs/pytest-$(name_of "$1").log"
  echo "=== TensorFlow ${job/:/ part }: tests"
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
  local job="${pending[$next]}"
  next=$((next + 1))
  run_job "$job" "${python_of[${job%%:*}]}" ".venv/logs/pytest-$(name_of "$job").log" "$@" &
  pid_of[$job]=$!
}
running=0
for ((i = 0; i < ${#pending[@]}; i++)); do
  # Results are printed in order: wait for each job in turn, keeping up to $jobs running.
  while [ "$next" -lt "${#pending[@]}" ] && [ "$running" -lt "$jobs" ]; do
    start_next "$@"; running=$((running + 1))
  done
  job="${pending[$i]}"
  wait "${pid_of[$job]}"; rc=$?
  running=$((running - 1))
  report "$job" "$rc"
done
echo "=== all lines done after $((SECONDS - started)) s"
echo "total: $passed passed, $failed failed, $skipped skipped"
exit $status

#!/usr/bin/env bash
# Checks the Bazel build with the Bazel of Debian's packages (bazel-bootstrap 4.2.3), fetching nothing:
# installs it if missing (apt-get, as root or through sudo), loads every package (`bazel query //...`), builds
# every py target (`bazel build //...`), runs one test target, and shuts the Bazel server down.
#
# Usage: scripts/bazel_check.sh [--python PATH] [--no-install] [TEST_TARGET]
#   --python PATH   interpreter whose site-packages are the dependencies (default: .venv/tf2.17/bin/python,
#                   made with `scripts/make_env.sh 2.17` when missing)
#   --no-install    fail instead of installing Bazel with apt-get
#   TEST_TARGET     default //:test_batch_sampler (a `unit` file: no TensorFlow graph work, no worker process)
# --jobs=1 and --host_jvm_args=-Xmx2g come from .bazelrc; the output base is .venv/bazel (outside the source
# tree as far as Bazel and git are concerned: .bazelignore, .gitignore).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

python=""
install=1
target="//:test_batch_sampler"
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "unknown option: $1" >&2; exit 2 ;;
    *) target="$1"; shift ;;
  esac
done

# Debian's Bazel, plus the offline stand-ins WORKSPACE points at (rules_cc/rules_java mocks of the source package).
mock_repos=/usr/src/bazel-bootstrap/mock_repos
if ! command -v bazel > /dev/null || [ ! -d "$mock_repos/rules_cc" ]; then
  if [ "$install" -eq 0 ]; then
    echo "bazel (Debian's bazel-bootstrap) or $mock_repos (bazel-bootstrap-source) is missing" >&2
    exit 1
  fi
  if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo > /dev/null; then sudo=(sudo); else
    echo "installing bazel-bootstrap needs root: apt-get install bazel-bootstrap bazel-bootstrap-source" >&2
    exit 1
  fi
  if ! apt-cache policy bazel-bootstrap 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    "${sudo[@]}" apt-get update -qq
  fi
  echo "installing bazel-bootstrap and bazel-bootstrap-source (Debian packages)" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bazel-bootstrap bazel-bootstrap-source \
    > /dev/null
fi

if [ -z "$python" ]; then
  python="$here/.venv/tf2.17/bin/python"
  [ -x "$python" ] || python="$(scripts/make_env.sh 2.17 | tail -n 1)"
fi
case "$python" in /*) ;; *) python="$PWD/$python" ;; esac
[ -x "$python" ] || { echo "no interpreter at $python" >&2; exit 1; }

# Per-checkout settings .bazelrc imports: output base outside the sources, the TF 2.17 environment by default.
mkdir -p .venv
cat > .venv/bazel.rc <<EOF
# Written by scripts/bazel_check.sh for this checkout.
startup --output_base=$here/.venv/bazel
build --python_path=$here/.venv/tf2.17/bin/python
EOF

status=0
run() {
  echo "+ bazel $*" >&2
  local start=$SECONDS
  if bazel "$@"; then echo "  ($((SECONDS - start)) s)" >&2; else status=1; echo "  FAILED ($((SECONDS - start)) s)" >&2; fi
}
echo "bazel-bootstrap $(dpkg-query -W -f='${Version}' bazel-bootstrap 2>/dev/null || echo '?'), python $python" >&2
run query //... --noshow_progress
[ "$status" -eq 0 ] && run build //... --python_path="$python" --noshow_progress
[ "$status" -eq 0 ] && run test "$target" --python_path="$python" --noshow_progress --nocache_test_results
bazel shutdown
if [ "$status" -eq 0 ]; then echo "bazel check: OK"; else echo "bazel check: FAILED"; fi
exit $status

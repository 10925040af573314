"""The Bazel build loads and runs with the Bazel of Debian's packages (bazel-bootstrap), fetching nothing.

Runs `scripts/bazel_check.sh` with this test's interpreter: `bazel query //...` (every tests/test_*.py is a
target, found by BUILD's glob), `bazel build //...`, one `bazel test` of a unit file, `bazel shutdown`.
Skipped with the reason where Bazel is not installed (`scripts/bazel_check.sh` installs it as root).
"""

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.unit, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOCK_REPOS = "/usr/src/bazel-bootstrap/mock_repos"
TEST_TARGET = "//:test_batch_sampler"


def _skip_reason():
  from tftrt_keras.formats.tftrt.format import tensorflow_version  # pylint: disable=g-import-not-at-top
  if not (tensorflow_version() or "").startswith("2.17."):
    # BUILD is the same on every line; one line (the one bazel_check.sh defaults to) keeps CI time down.
    return f"the Bazel check runs on the TF 2.17 line only (this is TensorFlow {tensorflow_version()})"
  if os.environ.get("TEST_SRCDIR"):
    return "running inside `bazel test`: Bazel is not run from within itself"
  if not shutil.which("bazel"):
    return ("bazel is not installed (Debian: apt-get install bazel-bootstrap bazel-bootstrap-source, "
            "or run scripts/bazel_check.sh as root)")
  if not os.path.isdir(os.path.join(MOCK_REPOS, "rules_cc")):
    return (f"{MOCK_REPOS} is missing: WORKSPACE uses the offline rules_cc/rules_java of Debian's "
            "bazel-bootstrap-source package (apt-get install bazel-bootstrap-source)")
  return None


@pytest.fixture(scope="module")
def bazel_check():
  reason = _skip_reason()
  if reason:
    pytest.skip(reason)
  # Listed before Bazel globs them: other files may appear meanwhile (the tree is being worked on).
  test_files = sorted(glob.glob(os.path.join(ROOT, "tests", "test_*.py")))
  result = subprocess.run(
      ["bash", os.path.join(ROOT, "scripts", "bazel_check.sh"), "--no-install", "--python", sys.executable,
       TEST_TARGET],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  output = result.stdout + result.stderr
  assert result.returncode == 0, output[-6000:]
  return output, test_files


def test_every_package_loads_and_every_test_file_is_a_target(bazel_check):
  output, test_files = bazel_check
  targets = {line.strip() for line in output.splitlines() if line.startswith("//:")}
  for name in ("tftrt_keras", "tftrt_export", "train_keras", "train_estimator", "hub_finetune", "test_support"):
    assert f"//:{name}" in targets, sorted(targets)
  assert len(test_files) > 10, test_files
  missing = [f for f in test_files
             if os.path.exists(f) and "//:" + os.path.basename(f)[:-len(".py")] not in targets]
  assert not missing, f"test files without a Bazel target: {missing}"


def test_py_targets_build_and_one_test_passes_with_this_interpreter(bazel_check):
  output, _ = bazel_check
  assert "bazel build //..." in output
  assert re.search(rf"^{re.escape(TEST_TARGET)}\s+PASSED in ", output, re.M), output[-3000:]
  assert "Executed 1 out of 1 test: 1 test passes." in output
  assert "bazel check: OK" in output


def test_nothing_was_downloaded(bazel_check):
  output, _ = bazel_check
  # Bazel says so for every download it tries ("Download from https://... failed" offline), and every external
  # repository it set up sits in the output base: only local ones, rules_cc/rules_java being Debian's mocks.
  assert "Download from" not in output
  external = os.path.join(ROOT, ".venv", "bazel", "external")
  repos = {n for n in os.listdir(external) if not n.startswith("@") and os.path.isdir(os.path.join(external, n))}
  local = {"bazel_tools", "platforms", "rules_cc", "rules_java", "remote_coverage_tools"}
  assert not {r for r in repos if r not in local and not r.startswith("local_")}, sorted(repos)
  for name in ("rules_cc", "rules_java"):
    assert os.path.realpath(os.path.join(external, name)) == os.path.join(MOCK_REPOS, name)

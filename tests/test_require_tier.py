"""`--require-tier MARKER` (tests/conftest.py): a GPU run that asked for a tier fails when that tier skips, instead of
reporting green; run in a child pytest on a small test file, with this repository's conftest as its plugin."""

import os
import subprocess
import sys

import pytest

# Each child pytest imports TensorFlow (tests/conftest.py): about 25 s each on two cores.
pytestmark = [pytest.mark.unit, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = '''
import pytest

@pytest.fixture
def gpu():
  pytest.skip("no GPU here (fixture)")

@pytest.mark.gpu_tier
def test_skips_in_its_body():
  pytest.skip("no TensorRT here")

@pytest.mark.gpu_tier
def test_skips_in_a_fixture(gpu):
  pass

@pytest.mark.gpu_tier
def test_runs():
  pass

def test_another_tier_may_skip():
  pytest.skip("not a GPU test")
'''


def _pytest(tmp_path, *args):
  (tmp_path / "test_tier.py").write_text(TESTS)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
  done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest", "-q",
                         "-rs", "-c", os.devnull, "-o", "markers=gpu_tier: a GPU tier", "--rootdir", str(tmp_path),
                         str(tmp_path / "test_tier.py"), *args],
                        capture_output=True, text=True, timeout=300, check=False, env=env, cwd=str(tmp_path))
  return done.returncode, done.stdout + done.stderr


def test_without_the_option_skips_are_skips(tmp_path):
  code, output = _pytest(tmp_path)
  assert code == 0, output
  assert "1 passed, 3 skipped" in output


def test_a_required_tier_that_skips_fails_with_the_skip_reason(tmp_path):
  code, output = _pytest(tmp_path, "--require-tier", "gpu_tier")
  assert code == 1, output
  assert ("the gpu_tier tier is required here (--require-tier), but this test skipped: Skipped: no TensorRT here"
          in output), output
  assert "but this test skipped: Skipped: no GPU here (fixture)" in output, output
  assert "1 failed, 1 passed, 1 skipped, 1 error" in output, output  # the unmarked skip stays a skip


def test_a_required_tier_none_of_whose_tests_ran_fails(tmp_path):
  code, output = _pytest(tmp_path, "--require-tier", "gpu_tier", "-m", "not gpu_tier")
  assert code == 1, output
  assert "FAILED: no test of the required tier(s) ['gpu_tier'] ran (--require-tier)" in output, output

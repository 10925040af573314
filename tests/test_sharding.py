"""tests/sharding.py: `--shard=K/N` splits the suite by whole files, deterministically, every file in one part."""

import os
import subprocess
import sys

import pytest

from tests import sharding

pytestmark = pytest.mark.unit
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_files_are_dealt_heaviest_first_to_the_least_loaded_part():
  counts = {"a.py": 1, "b.py": 1, "c.py": 1, "d.py": 10}
  weights = {"a.py": 100, "b.py": 60, "c.py": 50}  # d.py unlisted: DEFAULT_SECONDS per test
  placed = sharding.assign(counts, weights, 2)
  assert placed == {"a.py": 0, "b.py": 1, "c.py": 1, "d.py": 0}
  assert sharding.assign(counts, weights, 1) == dict.fromkeys(counts, 0)


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_a_bad_shard_names_the_option_and_what_it_expects(text):
  with pytest.raises(ValueError, match=r"--shard: received .*; expected K/N with 1 <= K <= N"):
    sharding.parse(text)


def test_the_parts_of_a_real_collection_cover_it_once():
  """pytest itself, collecting two real test files in two parts: each file, whole, in exactly one part."""
  files = ["tests/test_sharding.py", "tests/test_summary.py"]

  def collected(shard):
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                             f"--shard={shard}", *files], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    return {line for line in result.stdout.splitlines() if "::" in line}

  parts = [collected("1/2"), collected("2/2")]
  by_file = [{test.split("::")[0] for test in part} for part in parts]
  assert by_file[0] and by_file[1] and not by_file[0] & by_file[1], by_file
  assert by_file[0] | by_file[1] == set(files)
  this_file = {f"tests/test_sharding.py::{name}" for name in globals() if name.startswith("test_")}
  assert {t.split("[")[0] for t in parts[0] | parts[1] if t.startswith("tests/test_sharding.py")} == this_file


def test_weights_are_seconds_per_file_from_a_junit_report(tmp_path):
  report = tmp_path / "report.xml"
  report.write_text('<testsuites><testsuite name="pytest">'
                    '<testcase classname="tests.test_a" name="test_1" time="1.25"/>'
                    '<testcase classname="tests.test_a" name="test_2[x]" time="2.0"/>'
                    '<testcase classname="tests.test_b.TestThing" name="test_3" time="0.5"/>'
                    '<testcase classname="tests.test_c" name="test_4" time="0.01"><skipped message="x"/></testcase>'
                    '</testsuite></testsuites>')
  # test_c was never run: not measured, so left out (it weighs DEFAULT_SECONDS a test where it runs).
  assert sharding.weights_from_junit(report) == {"tests/test_a.py": 3.2, "tests/test_b.py": 0.5}


def test_a_test_marked_for_other_lines_is_skipped_with_the_lines_that_run_it():
  """tests/conftest.py's `lines` marker, seen through pytest itself: the marked test is skipped here, with why."""
  from tests import corpus_scripts  # pylint: disable=g-import-not-at-top
  line = corpus_scripts.tf_line()
  if line == "2.21":
    pytest.skip("on TF 2.21 the marked test runs in the suite itself; its skip is checked on 2.15 and 2.17")
  result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
                           "tests/test_keras_callback.py::test_exports_to_keep_defaults_to_five"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
  assert "1 skipped" in result.stdout and f"runs on TF 2.21 only (this is TF {line}): the retention default" in (
      result.stdout), result.stdout[-2000:]

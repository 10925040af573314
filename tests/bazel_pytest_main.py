"""`main` of every Bazel `py_test` target: runs pytest on the test file given as the first argument.

Bazel runs a py_test's `main` as a script; the test files are pytest modules (fixtures, markers, conftest), so
each target hands its file to pytest instead of executing it directly.
"""

import os
import sys

import pytest


def main(argv):
  if len(argv) < 2:
    print("usage: bazel_pytest_main.py tests/test_x.py [pytest args...]", file=sys.stderr)
    return 2
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  # Bazel's XML_OUTPUT_FILE makes results show up per test case in `bazel test` reports.
  extra = [f"--junitxml={os.environ['XML_OUTPUT_FILE']}"] if os.environ.get("XML_OUTPUT_FILE") else []
  return pytest.main(["-q", "--rootdir", root, "-p", "no:cacheprovider", *extra, *argv[1:]])


if __name__ == "__main__":
  sys.exit(main(sys.argv))

"""`--shard=K/N`: this pytest process runs the K-th of N parts of the collected tests, whole files each.

scripts/run_tests.sh runs the slowest TensorFlow line in two processes side by side, so that its tail does not run
alone on one core after the other lines finish. Files are dealt out by weight (tests/shard_weights.json: seconds a
file took on that line, measured; a file not listed weighs DEFAULT_SECONDS a test), heaviest first, each to the
part with the least so far: the same files land in the same part on every run.
"""

import json
import os

WEIGHTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shard_weights.json")
DEFAULT_SECONDS = 3.0


def parse(text):
  """(K, N) of "K/N", 1 <= K <= N.

  Raises:
    ValueError: naming what was received and what is expected.
  """
  try:
    part, parts = (int(n) for n in str(text).split("/"))
  except ValueError:
    part = parts = 0
  if not 1 <= part <= parts:
    raise ValueError(f"--shard: received {text!r}; expected K/N with 1 <= K <= N, e.g. 1/2")
  return part, parts


def read_weights(path=WEIGHTS_FILE):
  """{test file relative to the repository: seconds} ({} when the file is missing)."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return {}


def assign(tests_per_file, weights, parts):
  """{file: part index 0..parts-1}: heaviest first, each to the least loaded part (ties: the lower index).

  Args:
    tests_per_file: {file: number of collected tests in it}.
    weights: {file: seconds}; a file not in it weighs DEFAULT_SECONDS per test.
    parts: how many parts.
  """
  load = [0.0] * parts
  placed = {}
  weight = {f: float(weights.get(f, DEFAULT_SECONDS * n)) for f, n in tests_per_file.items()}
  for name in sorted(weight, key=lambda f: (-weight[f], f)):
    part = min(range(parts), key=lambda p: (load[p], p))
    placed[name] = part
    load[part] += weight[name]
  return placed


def select(items, shard, file_of, weights=None):
  """(kept, deselected) items of part `shard` ("K/N")."""
  part, parts = parse(shard)
  counts = {}
  for item in items:
    counts[file_of(item)] = counts.get(file_of(item), 0) + 1
  placed = assign(counts, read_weights() if weights is None else weights, parts)
  kept = [i for i in items if placed[file_of(i)] == part - 1]
  return kept, [i for i in items if placed[file_of(i)] != part - 1]


def weights_from_junit(path):
  """{test file: seconds} from a pytest `--junitxml` report (a test's `classname` is its module's dotted path).
  A file whose every test was skipped is left out: it was not measured (e.g. the Estimator's, on TF 2.21), so on
  a line where it runs it weighs DEFAULT_SECONDS a test instead of nothing."""
  import xml.etree.ElementTree as ElementTree  # pylint: disable=g-import-not-at-top
  seconds, ran = {}, set()
  for case in ElementTree.parse(path).iter("testcase"):
    module = case.get("classname", "").split(".")
    # "tests.test_x" or "tests.test_x.TestClass": the file is the part up to the first test_ module.
    upto = next((i for i, part in enumerate(module) if part.startswith("test_")), len(module) - 1)
    name = "/".join(module[:upto + 1]) + ".py"
    seconds[name] = round(seconds.get(name, 0.0) + float(case.get("time", 0.0)), 1)
    if case.find("skipped") is None:
      ran.add(name)
  return {name: value for name, value in seconds.items() if name in ran}


if __name__ == "__main__":  # python tests/sharding.py weights report.xml: rewrites tests/shard_weights.json
  import sys  # pylint: disable=g-import-not-at-top
  if sys.argv[1:2] != ["weights"] or len(sys.argv) != 3:
    sys.exit("usage: python tests/sharding.py weights JUNIT_XML")
  with open(WEIGHTS_FILE, "w") as out:
    json.dump(dict(sorted(weights_from_junit(sys.argv[2]).items())), out, indent=1)
    out.write("\n")

"""The corpus of keras-io example scripts (tests/corpus/): which apply to this TF line, running one, judging its export.

Each script in tests/corpus/ is a user's training script (see its header for the keras-io example it follows) run
as `python tests/corpus/<name>.py <export_dir>`; its `# corpus-lines:` comment names the TF lines it applies to.
Shared by tests/test_corpus.py (a few fast ones, asserted) and benchmarks/bench_corpus.py (all, one table).
"""

import dataclasses
import glob
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS_DIR = os.path.join(ROOT, "tests", "corpus")
USABLE = ("ok", "unverified")
NOT_USABLE_SOURCES = ("rejected", "failed")

# Statuses a variant may have for reasons of this machine or of the data, never of this library. Anything else
# (verification that could not run, an export that failed, a rejection) is a defect of ours.
UNVERIFIED_ALLOWED = (
    r"^no GPU here can run this TensorRT-RTX engine",     # trt_rtx built without a GPU of its compute capability
    r"(^|: )too few verification samples to tell",          # an agreement's bounds straddle the gate
    # The normal export's outputs are constant over the held-out samples (an unsettled network): a constant
    # variant would pass, so nothing can vouch. A one-class top-1 over varying values (issue 22, 6) is not here.
    r"^the model's outputs do not vary enough over the held-out samples to judge \(output `[^`]+`: "
    r"(top-1 class \S+ for \d+ of \d+ samples, )?spread across samples [0-9.e-]+ of its largest value [0-9.e-]+ "
    r"\(< 0\.001\)\)$",
)
SKIPPED_ALLOWED = (
    r"^TensorRT engines cannot be built here",             # trt_*: no TensorRT package or no GPU
    r"^superseded by version \d+",                          # conversion_policy="latest" gave way to a newer export
    r"TensorRT-RTX is not installed",
    r"TF-TRT|TensorRT .*not found|not been built with TensorRT|no GPU visible",   # tftrt_* without TensorRT/GPU
)


def tf_line():
  """"2.15", "2.17" or "2.21": the installed TensorFlow's major.minor (without importing it)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  for name in ("tensorflow", "tensorflow-cpu", "tf-nightly"):
    try:
      return ".".join(metadata.version(name).split(".")[:2])
    except metadata.PackageNotFoundError:
      continue
  raise RuntimeError("TensorFlow is not installed")


def lines_of(name):
  """The TF lines a corpus script applies to, from its `# corpus-lines:` comment."""
  with open(os.path.join(CORPUS_DIR, f"{name}.py")) as f:
    found = re.search(r"^# corpus-lines:(.*)$", f.read(), re.MULTILINE)
  if not found:
    raise ValueError(f"tests/corpus/{name}.py has no `# corpus-lines:` comment")
  return tuple(found.group(1).split())


def scripts(line=None):
  """Names of the corpus scripts (sorted), those applying to `line` when given."""
  names = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(CORPUS_DIR, "*.py")))
  return [n for n in names if line is None or line in lines_of(n)]


@dataclasses.dataclass
class Run:
  name: str
  export_dir: str
  returncode: int
  seconds: float
  output: str

  def manifests(self):
    """{version: manifest dict} of every export the run made."""
    found = {}
    for path in glob.glob(os.path.join(self.export_dir, "manifests", "*", "manifest.json")):
      with open(path) as f:
        manifest = json.load(f)
      found[manifest["version"]] = manifest
    return dict(sorted(found.items()))

  def samples(self, version, kind="calibration"):
    """{input name: array} of calibration/<version>/<kind>.npz."""
    with np.load(os.path.join(self.export_dir, "calibration", str(version), f"{kind}.npz")) as f:
      return {key: f[key] for key in f.files}


def run_script(name, export_dir, timeout=600, python=None):
  """Runs tests/corpus/<name>.py as a child process (this repository first on its path) and returns its Run."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  start = time.monotonic()
  try:
    done = subprocess.run([python or sys.executable, os.path.join(CORPUS_DIR, f"{name}.py"), export_dir], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          check=False)
    returncode, output = done.returncode, done.stdout
  except subprocess.TimeoutExpired as err:
    returncode, output = -9, f"timed out after {timeout} s\n{err.stdout or ''}"
  return Run(name, export_dir, returncode, time.monotonic() - start, output)


def allowed(status, reason):
  """Whether an artifact's status is usable or not usable for a reason that is not a defect of ours."""
  if status == "ok":
    return True
  patterns = {"unverified": UNVERIFIED_ALLOWED, "skipped": SKIPPED_ALLOWED}.get(status, ())
  return any(re.search(p, reason or "") for p in patterns)


def not_ours_problems(manifest):
  """'version artifact: status: reason' for each artifact whose status is a defect of ours."""
  return [f"version {manifest['version']} {name}: {entry['status']}: {entry.get('reason')}"
          for name, entry in manifest["artifacts"].items() if not allowed(entry["status"], entry.get("reason"))]


def usable_on_unusable_source(manifest):
  """'artifact (status) built from source (status)' for each usable artifact whose source was rejected or failed."""
  artifacts = manifest["artifacts"]
  found = []
  for name, entry in artifacts.items():
    source = artifacts.get(entry.get("built_from") or "")
    if source and source["status"] in NOT_USABLE_SOURCES and entry["status"] in USABLE:
      found.append(f"version {manifest['version']} {name} ({entry['status']}) built from {entry['built_from']} "
                   f"({source['status']})")
  return found

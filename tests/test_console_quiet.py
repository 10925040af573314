"""The console a user sees: entry points run as child processes with the user's environment (no
TF_CPP_MIN_LOG_LEVEL, which the test session sets for itself), and their output holds our lines only."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests import console_table
from tests import saved_models
from tests import test_tftrt_export_cli
from tftrt_keras import quiet_console

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_KERAS = os.path.join(ROOT, "examples", "train_keras.py")

# What TensorFlow, absl and Keras print that a user cannot act on (seen on TF 2.15, 2.17 and 2.21 here).
NOISE = {
    "cuFFT/cuDNN/cuBLAS factory errors": r"Unable to register cu(FFT|DNN|BLAS) factory",
    "oneDNN notice": r"oneDNN custom operations are on",
    "TF-TRT warning": r"TF-TRT Warning|Could not find TensorRT",
    "CUDA driver notice": r"Could not find cuda drivers",
    "CPU feature notice": r"This TensorFlow binary is optimized|cpu_feature_guard",
    "absl pre-init notice": r"All log messages before absl::InitializeLog\(\) is called",
    "C++ log line": r"(?m)^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ",
    "absl log line": r"(?m)^[IWEF]\d{4} \d\d:\d\d:[\d.]+ ",
    "Keras input-structure warning": r"The structure of `inputs` doesn't match the expected structure",
    "traceback": r"Traceback \(most recent call last\)",
}


def user_environment():
  env = dict(os.environ)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  env.pop(quiet_console.ORIGINAL_CPP_LOG_LEVEL_VARIABLE, None)
  return env


def _assert_quiet(output):
  found = {name: re.search(pattern, output).group(0) for name, pattern in NOISE.items() if re.search(pattern, output)}
  assert not found, f"noise on the console: {found}\n---\n{output[-4000:]}"


@pytest.fixture
def restored_logging():
  """quiet_tensorflow() lowers this process's absl and `tensorflow` loggers; later tests read their warnings."""
  import logging  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  verbosity, tf_level = absl_logging.get_verbosity(), logging.getLogger("tensorflow").level
  yield
  absl_logging.set_verbosity(verbosity)
  logging.getLogger("tensorflow").setLevel(tf_level)


@pytest.mark.unit
def test_quiet_tensorflow_sets_the_level_only_when_the_user_did_not(restored_logging):  # pylint: disable=redefined-outer-name,unused-argument
  environ = {}
  assert quiet_console.quiet_tensorflow(environ) in (True, False)
  assert environ[quiet_console.CPP_LOG_LEVEL_VARIABLE] == "3"
  assert environ[quiet_console.ORIGINAL_CPP_LOG_LEVEL_VARIABLE] == ""
  assert "TF_ENABLE_ONEDNN_OPTS" not in environ  # numerics are not ours to change
  users = {"TF_CPP_MIN_LOG_LEVEL": "0"}
  assert quiet_console.quiet_tensorflow(users) is True
  assert users == {"TF_CPP_MIN_LOG_LEVEL": "0"}


# The child's environment, not the product: a `tensorflow` whose loading prints to file descriptor 2 (as the C++
# runtime does) and then fails, or succeeds.
_FAKE_LOADING = """
import os, sys
class LoudTensorFlow:
  def find_spec(self, name, path=None, target=None):
    if name == "tensorflow":
      os.write(2, b"I0000 00:00:1.5 port.cc:153] oneDNN custom operations are on\\n")
      if sys.argv[1] == "fail":
        raise ImportError("libtensorflow_framework.so.2: cannot open shared object file")
      import importlib.util
      return importlib.util.spec_from_loader(name, self)
    return None
  def create_module(self, spec):
    return None
  def exec_module(self, module):
    pass
sys.meta_path.insert(0, LoudTensorFlow())
from tftrt_keras import quiet_console
quiet_console.import_tensorflow()
print("imported")
"""


@pytest.mark.unit
@pytest.mark.parametrize("outcome", ["ok", "fail"])
def test_import_tensorflow_hides_loading_output_unless_the_import_fails(outcome):
  result = subprocess.run([sys.executable, "-c", _FAKE_LOADING, outcome], capture_output=True, text=True,
                          timeout=60, check=False, env=user_environment())
  if outcome == "ok":
    assert (result.returncode, result.stdout, result.stderr) == (0, "imported\n", "")
  else:
    assert result.returncode == 1 and "imported" not in result.stdout
    assert "oneDNN custom operations are on" in result.stderr  # what the failed import printed, shown
    assert "ImportError: libtensorflow_framework.so.2" in result.stderr


def check_main_job_console(result, export_dir, epochs):
  """What the main job printed (run by tests/test_example_train_keras.py with the user's environment): our lines
  only, the machine's skips once, a line per export, the earlier exports in one statement, the latest in full,
  about 30 lines."""
  _assert_quiet(result.stdout + result.stderr)
  assert result.stderr == ""
  out = result.stdout
  versions = list(range(1, epochs + 1))
  from tftrt_keras.artifacts.manifest import read_manifest  # pylint: disable=g-import-not-at-top
  manifests = [read_manifest(export_dir / "manifests" / str(v) / "manifest.json") for v in versions]
  # Said once before the first export: what this machine cannot build; the per-export lines leave it out.
  skipped_here = {n: e["reason"] for n, e in manifests[-1]["artifacts"].items()
                  if e["status"] == "skipped" and n.startswith(("tftrt_", "trt_"))}
  flat = " ".join(out.split())
  from tftrt_keras.verify import summary  # pylint: disable=g-import-not-at-top
  for name, reason in skipped_here.items():  # the format and its reason's first clause, once; the preflight in full
    fmt = summary.variant_groups([name]).split()[0]
    assert re.search(rf"skipped on this machine: (.*, )?{fmt} \("
                     + re.escape(summary._first_clause(" ".join(reason.split()))) + r"\)", flat), name  # pylint: disable=protected-access
  assert out.count("python -m tftrt_keras.preflight") == (1 if skipped_here else 0)
  per_export = re.findall(r"(?m)^tftrt_keras: exported version (\d+) to .*; (.*)$", out)
  assert [v for v, _ in per_export] == [str(v) for v in versions]
  skipped_formats = {name.rsplit("_", 1)[0] for name in skipped_here}
  for _, doing in per_export:  # "converting onnx fp32, trt_rtx fp32 in the background": what will be attempted
    assert not skipped_formats & set(re.findall(r"(\w+) (?:fp32|fp16|int8)\b", doing)), doing
  assert out.count("tftrt_keras exports:") == 1
  # The earlier exports in one statement (versions with the same counts together), the latest in full (a row per
  # format, its precisions in one cell), once.
  earlier = out[out.index("tftrt_keras exports:"):out.index(f"version {versions[-1]} (latest)")]
  covered = [v for first, last in re.findall(r"versions? (\d+)(?:-(\d+))?: \d+ \w+", earlier)
             for v in range(int(first), int(last or first) + 1)]
  assert covered == versions[:-1], earlier
  assert len(re.findall(rf"(?m)^version {versions[-1]} \(latest\) +status", out)) == 1
  latest = manifests[-1]["artifacts"]
  shown = console_table.statuses(out, latest)
  assert {n: s for n, (s, _) in shown.items()} == {n: e["status"] for n, e in latest.items()}
  # Each footnote once, each of its reasons written once.
  footnotes = re.findall(r"(?m)^\[(\d+)\] ", out)
  assert footnotes == [str(n) for n in range(1, len(footnotes) + 1)]
  for name, entry in latest.items():
    if entry.get("reason") and name not in skipped_here:  # those were said before the first export
      assert flat.count(" ".join(entry["reason"].split())) == 1, entry
  assert out.count("Manifest: ") == 1 and f"Manifest: {export_dir}/manifests/{versions[-1]}/manifest.json" in out
  assert "Calibration: " in out  # how the samples were split
  assert f"Epoch {epochs}/{epochs}" in out  # Keras' own per-epoch lines stay
  # About 30 lines: one per statement (a line not indented; long reasons wrap at 100 characters under it).
  statements = [line for line in out.splitlines() if not line.startswith(" ")]
  assert len(statements) <= 32 and len(out.splitlines()) <= 40, out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  base = tmp_path_factory.mktemp("console")
  saved_models.classifier(base / "model", seed=4)
  np.savez(base / "x.npz", **saved_models.samples(24, seed=6))
  return base


@pytest.mark.tf
@pytest.mark.slow
def test_the_cli_prints_its_tables_and_manifest_path_only(model):
  out_dir = model / "serving"
  result = subprocess.run(
      [*test_tftrt_export_cli.command(), f"--saved_model_dir={model / 'model'}", f"--output_dir={out_dir}", "--export_precisions=FP16,INT8",
       f"--calibration_data={model / 'x.npz'}"],
      capture_output=True, text=True, timeout=600, check=False, env=user_environment())
  assert result.returncode in (0, 1), result.stderr[-4000:]
  _assert_quiet(result.stdout + result.stderr)
  assert result.stderr == ""
  out = result.stdout
  assert len(re.findall(r"(?m)^version 1 +status", out)) == 1  # the artifact table
  assert len(re.findall(r"(?m)^artifact +status +max abs err", out)) == 1  # the verification table
  assert out.rstrip().endswith(f"Manifest: {out_dir}/manifests/1/manifest.json")
  # As in training: what this machine cannot build is said once, first and in brief; the table says "said above".
  from tftrt_keras.artifacts.manifest import read_manifest  # pylint: disable=g-import-not-at-top
  artifacts = read_manifest(out_dir / "manifests" / "1" / "manifest.json")["artifacts"]
  skipped_here = {n: " ".join(e["reason"].split()) for n, e in artifacts.items()
                  if e["status"] == "skipped" and n.startswith(("tftrt_", "trt_"))}
  flat = " ".join(out.split())
  assert out.count("python -m tftrt_keras.preflight") == (1 if skipped_here else 0), out
  if skipped_here:
    assert out.startswith("tftrt_keras: skipped on this machine: ") and "said above" in out, out
    assert not any(reason in flat for reason in skipped_here.values()), out

"""scripts/run_gpu_tests.sh installs nothing that would replace an NVIDIA container's TensorFlow.

The script cannot run its tests here (no GPU, no TensorRT). Its install steps can: with
TFTRT_GPU_TESTS_DRY_RUN it resolves each step for real with `pip install --dry-run --ignore-installed --report`,
i.e. everything that step would install into an environment that had nothing, and this test reads those reports.
The constraints it pins come from this TF line's environment, standing in for the container's.
"""

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "run_gpu_tests.sh")


def _canonical(name):
  return re.sub(r"[-_.]+", "-", name).lower()


def _replaces_the_container(name):
  """Packages that must come from the container: TensorFlow (any build), Keras, tf_keras, TensorRT."""
  name = _canonical(name)
  return ((name.startswith("tensorflow") and name != "tensorflow-hub") or name in ("keras", "tf-keras", "tf-nightly")
          or name.startswith("tensorrt") or name.startswith("nvidia-tensorrt"))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
  directory = tmp_path_factory.mktemp("gpu_dry_run")
  env = dict(os.environ, PYTHON=sys.executable, TFTRT_GPU_TESTS_DRY_RUN=str(directory))
  done = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=300, check=False)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  found = {}
  for step in (1, 2, 3):
    with open(directory / f"step{step}.json") as f:
      found[step] = {_canonical(item["metadata"]["name"]): item["metadata"]["version"]
                     for item in json.load(f)["install"]}
  return found, done.stdout


def test_no_step_installs_tensorflow_keras_tf_keras_or_tensorrt(reports):
  found, _ = reports
  for step, installs in found.items():
    assert installs, f"step {step} resolved to nothing: the check would prove nothing"
    assert [n for n in installs if _replaces_the_container(n)] == [], f"step {step} would replace the container's"


def test_steps_install_the_package_then_the_test_and_onnx_deps(reports):
  found, stdout = reports
  assert list(found[1]) == ["tftrt-keras"]  # --no-deps: the package alone
  assert {"pytest", "pytest-timeout", "scikit-learn", "matplotlib", "tf2onnx", "onnxruntime"} <= set(found[2])
  from tftrt_keras.formats.tftrt.format import tensorflow_has_tftrt  # pylint: disable=g-import-not-at-top
  if tensorflow_has_tftrt():  # TF 2.15-2.17: onnx 1.19+ would not import there
    assert found[2]["onnx"] == "1.18.0"
  else:  # later lines keep the onnx they have (every installed package is pinned to itself)
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    assert found[2]["onnx"] == metadata.version("onnx")
  assert list(found[3]) == ["tensorflow-hub"]  # its tf-keras requirement is not followed
  assert "dry run: reports in" in stdout and "=== tests" not in stdout


def test_versions_already_installed_are_kept(reports):
  """What the container has is pinned: numpy and protobuf resolve to this environment's own versions."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  found, _ = reports
  for name in ("numpy", "protobuf"):
    assert found[2][name] == metadata.version(name), name

"""scripts/run_gpu_tests.sh installs nothing that would replace an NVIDIA container's TensorFlow or TensorRT, pins
cuda-python to the container's CUDA, and runs pytest requiring the generation's tier.

The script cannot run its tests here (no GPU, no TensorRT). Its install steps can: with
TFTRT_GPU_TESTS_DRY_RUN it resolves each step for real with `pip install --dry-run --ignore-installed --report`,
i.e. everything that step would install into an environment that had nothing, and this test reads those reports.
The constraints it pins come from this TF line's environment, standing in for the container's; the CUDA version
is given as the container's would be ($CUDA_VERSION).
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


def _dry_run(directory, generation, cuda):
  env = dict(os.environ, PYTHON=sys.executable, TFTRT_GPU_TESTS_DRY_RUN=str(directory), CUDA_VERSION=cuda)
  done = subprocess.run(["bash", SCRIPT, "--inside", generation], capture_output=True, text=True, env=env,
                        timeout=600, check=False)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  found = {}
  for step in (1, 2, 3):
    with open(directory / f"step{step}.json") as f:
      found[step] = {_canonical(item["metadata"]["name"]): item["metadata"]["version"]
                     for item in json.load(f)["install"]}
  return found, done.stdout


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
  return _dry_run(tmp_path_factory.mktemp("gpu_dry_run"), "tftrt", "12.4.0.041")


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
  cuda_python = tuple(int(p) for p in found[2]["cuda-python"].split(".")[:2])
  assert (12, 6) <= cuda_python < (13, 0), cuda_python  # the container's CUDA 12, with cuda.bindings
  assert stdout.rstrip().endswith(f"would run: {sys.executable} -m pytest -p no:cacheprovider -q -rs --require-tier "
                                  "tftrt"), stdout[-500:]


def test_a_tensorrt_generation_pins_cuda_python_to_the_containers_cuda_and_requires_the_engine_tier(tmp_path):
  """trt11 (CUDA 13): TensorFlow and the ONNX tools at constraints/tf2.21.txt's versions, no TensorRT from the
  index, cuda-python 13.x, and pytest with --require-tier trt_engines on TensorRT's test files. (Here there is no
  TensorRT 11, which a real run refuses; a dry run says so and goes on.)"""
  found, stdout = _dry_run(tmp_path, "trt11", "13.0.2.006")
  assert "=== dry run: TensorRT 11.x required" in stdout
  installs = {name: version for step in found.values() for name, version in step.items()}
  assert [n for n in installs if n.startswith("tensorrt") or n.startswith("nvidia-tensorrt")] == []
  assert installs["cuda-python"].startswith("13.")
  with open(os.path.join(ROOT, "constraints", "tf2.21.txt")) as f:
    pinned = dict(line.strip().split("==") for line in f if re.match(r"^[A-Za-z0-9_.-]+==", line))
  assert installs["tensorflow"] == pinned["tensorflow"] and installs["onnx"] == pinned["onnx"]
  assert stdout.rstrip().endswith("--require-tier trt_engines tests/test_trt_engines_tier.py "
                                  "tests/test_tensorrt_format.py tests/test_trt_compat.py"), stdout[-500:]


def test_an_image_of_another_tensorrt_generation_is_refused():
  """Outside a dry run, a container whose TensorRT is not the generation's fails before installing anything."""
  env = dict(os.environ, PYTHON=sys.executable, CUDA_VERSION="12.8.0.038")
  env.pop("TFTRT_GPU_TESTS_DRY_RUN", None)
  done = subprocess.run(["bash", SCRIPT, "--inside", "trt10"], capture_output=True, text=True, env=env, timeout=120,
                        check=False)
  assert done.returncode == 1
  assert ("run_gpu_tests.sh (trt10): nvcr.io/nvidia/tensorrt:25.01-py3 has TensorRT 'none', not 10.x: set "
          "TRT10_IMAGE") in done.stderr, done.stderr


def test_versions_already_installed_are_kept(reports):
  """What the container has is pinned: numpy and protobuf resolve to this environment's own versions."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  found, _ = reports
  for name in ("numpy", "protobuf"):
    assert found[2][name] == metadata.version(name), name

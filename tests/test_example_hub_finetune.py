"""examples/hub_finetune.py run as a user runs it: a child process with flags, on this TF line.

The real TF-TRT backend runs: without TensorRT here, the TF-TRT variants are recorded as skipped with the reason.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import console_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "hub_finetune.py")


def _run(args, timeout=300):
  return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True, timeout=timeout,
                        check=False, cwd=ROOT)


def _latest_manifest(root):
  versions = sorted(int(n) for n in os.listdir(root / "manifests") if n.isdigit())
  return json.loads((root / "manifests" / str(versions[-1]) / "manifest.json").read_text())


def _assert_artifacts_as_a_user_expects(manifest, stdout):
  artifacts = manifest["artifacts"]
  assert {"native", "frozen", "calibration", "onnx_fp32", "onnx_fp16", "onnx_int8"} <= set(artifacts)
  assert artifacts["native"]["status"] == "ok"
  assert artifacts["calibration"]["status"] == "ok" and artifacts["calibration"]["samples"] > 0
  # A variables-only hub module freezes; should a module ever not, the manifest must say why.
  assert artifacts["frozen"]["status"] == "ok" or (artifacts["frozen"]["status"] == "skipped"
                                                   and artifacts["frozen"]["reason"]), artifacts["frozen"]
  from tftrt_keras.preflight import check_tftrt  # pylint: disable=g-import-not-at-top
  for name in [n for n in artifacts if n.startswith(("tftrt_", "trt_")) and not n.startswith("trt_rtx_")]:
    if check_tftrt().usable:
      assert artifacts[name]["status"] == "ok", artifacts[name]
    else:
      assert artifacts[name]["status"] == "skipped" and "TensorRT" in artifacts[name]["reason"], artifacts[name]
  # TensorRT-RTX builds on any machine (tests/test_trt_rtx_format.py covers what its statuses say).
  for name in [n for n in artifacts if n.startswith("trt_rtx_")]:
    assert artifacts[name]["status"] in ("ok", "unverified") and artifacts[name]["engine_bytes"] > 0, artifacts[name]
  # The table at the end of training gives each artifact of this export its status, printed once.
  assert stdout.count("tftrt_keras exports:") == 1
  table = stdout[stdout.index("tftrt_keras exports:"):stdout.index("Calibration: ")]
  rows = console_table.statuses(table, artifacts)
  assert {n: s for n, (s, _) in rows.items()} == {n: e["status"] for n, e in artifacts.items()}
  # The closing lines: how the samples were split, and where the manifest is.
  closing = stdout[stdout.index("Calibration: "):]
  assert "Calibration: " in closing
  assert f"manifests/{manifest['version']}/manifest.json" in closing


def _serve_normal_export(root, version, images):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  loaded = tf.saved_model.load(str(root / str(version)))
  serve = loaded.signatures["serving_default"]
  (name,) = serve.structured_input_signature[1]
  outputs = serve(**{name: tf.constant(images)})
  return name, {key: value.numpy() for key, value in outputs.items()}


def _checkpoint_arrays(saved_model_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(str(saved_model_dir / "variables" / "variables"))
  return [reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
          if key.endswith("VARIABLE_VALUE")]


def _contains(arrays, wanted):
  return any(a.shape == wanted.shape and np.array_equal(a, wanted) for a in arrays)


def _write_users_module(path):
  """A hub module as a user would bring it: flatten, scale (non-trainable), dense to 12 features, ReLU."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class Flat(tf.Module):
    variables = ()  # stored lists replace tf.Module's computed properties (hub.KerasLayer reads these)
    trainable_variables = ()

    def __init__(self):
      super().__init__()
      self.kernel = tf.Variable(np.linspace(-1.0, 1.0, 64 * 12, dtype="float32").reshape(64, 12), name="kernel")
      self.scale = tf.Variable(2.0, trainable=False, name="scale")
      self.variables = [self.kernel, self.scale]
      self.trainable_variables = [self.kernel]

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
    def __call__(self, images):
      return tf.nn.relu(tf.matmul(tf.reshape(images, [-1, 64]) * self.scale, self.kernel))

  module = Flat()
  tf.saved_model.save(module, str(path))
  return module.kernel.numpy()


@pytest.mark.unit
def test_help_explains_the_hub_module_keras_2_and_lists_the_flags():
  result = _run(["--help"], timeout=120)
  # absl's --help prints the usage and exits; a crash would leave a traceback instead.
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  for flag in ("--hub_module", "--epochs", "--batch_size", "--[no]fine_tune", "--seed", "--export_dir",
               "--export_precisions", "--export_calibration_batches", "--export_exports_to_keep",
               "--[no]export_require_tensorrt", "--export_formats"):
    assert flag in result.stdout, f"{flag} missing from --help"
  assert "hub.KerasLayer" in result.stdout and "tf_keras" in result.stdout and "digits" in result.stdout


@pytest.mark.unit
def test_a_hub_module_path_that_is_no_saved_model_is_refused_by_name(tmp_path):
  result = _run([f"--hub_module={tmp_path / 'missing'}", f"--export_dir={tmp_path / 'e'}"], timeout=120)
  assert result.returncode != 0
  assert "--hub_module" in result.stderr and "saved_model.pb" in result.stderr
  assert not os.path.exists(tmp_path / "e")


@pytest.mark.tf
@pytest.mark.slow
def test_without_a_module_it_writes_one_fine_tunes_it_and_the_export_serves_the_models_predictions(tmp_path):
  root = tmp_path / "export"
  predictions = tmp_path / "predictions.npz"
  result = _run([f"--export_dir={root}", "--epochs=1", "--fine_tune", "--export_calibration_batches=3", "--seed=3",
                 f"--predictions_file={predictions}"])
  assert result.returncode == 0, result.stderr[-4000:]

  written = tmp_path / "digit_features_module"
  assert (written / "saved_model.pb").is_file()
  assert f"wrote a digit feature extractor module to {written}" in result.stdout
  manifest = _latest_manifest(root)
  assert manifest["version"] == 1 and manifest["source"]["epoch"] == 1
  _assert_artifacts_as_a_user_expects(manifest, result.stdout)

  expected = np.load(predictions)
  _, outputs = _serve_normal_export(root, 1, expected["images"])
  np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6)
  # Fine-tuned: none of the module's own weight arrays is in the export unchanged.
  module_weights = [a for a in _checkpoint_arrays(written) if a.ndim >= 2]
  exported = _checkpoint_arrays(root / "1")
  assert module_weights and not any(_contains(exported, w) for w in module_weights)


@pytest.mark.tf
@pytest.mark.slow
def test_a_users_module_is_used_frozen_and_exported_with_its_weights_unchanged(tmp_path):
  module = tmp_path / "users_module"
  kernel = _write_users_module(module)
  root = tmp_path / "export"
  predictions = tmp_path / "predictions.npz"
  result = _run([f"--export_dir={root}", f"--hub_module={module}", "--nofine_tune", "--epochs=2",
                 "--batch_size=64", "--export_calibration_batches=2", f"--predictions_file={predictions}"])
  assert result.returncode == 0, result.stderr[-4000:]

  assert not (tmp_path / "digit_features_module").exists()  # it used the given module, wrote none
  manifest = _latest_manifest(root)
  assert manifest["version"] == 2
  _assert_artifacts_as_a_user_expects(manifest, result.stdout)
  exported = _checkpoint_arrays(root / "2")
  assert _contains(exported, kernel)  # not fine-tuned: the module's weights as the user wrote them
  assert any(a.shape == (12, 10) for a in exported)  # the classifier sits on the module's 12 features

  expected = np.load(predictions)
  _, outputs = _serve_normal_export(root, 2, expected["images"])
  np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6)

"""`TrtExporter` (tf.estimator exporter, TF 2.15) with real Estimators, real train_and_evaluate, real workers.

Evaluation rows carry a marker: pixel 0 of every digit is 0 in the data set, and in the evaluation rows it is
set to `EVAL_MARKER + row / 1000`, so a captured sample shows both that it came from evaluation and where in
the (ordered) evaluation pass it was.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf


HAS_ESTIMATOR = hasattr(tf, "estimator")
needs_estimator = pytest.mark.skipif(
    not HAS_ESTIMATOR, reason=f"TensorFlow {tf.__version__} has no tf.estimator (Estimator is TF 2.15 only)")

EVAL_MARKER = 2.0
EVAL_BATCH = 16


# ---------------------------------------------------------------------------------------------- data
def digits():
  """(train_x, train_y, eval_x, eval_y): sklearn digits, pixels in [0, 1], evaluation rows marked."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  data = load_digits()
  x = (data.data / 16.0).astype("float32")
  y = data.target.astype("int64")
  train_x, train_y, eval_x, eval_y = x[:1400], y[:1400], x[1400:].copy(), y[1400:]
  assert not train_x[:, 0].any()  # the corner pixel is blank in every digit: free for the marker
  eval_x[:, 0] = EVAL_MARKER + np.arange(len(eval_x), dtype="float32") / 1000.0
  return train_x, train_y, eval_x, eval_y


def eval_rows_of(x):
  """Evaluation row numbers encoded in the marker pixel; raises if a row is not an evaluation row."""
  assert (x[:, 0] >= EVAL_MARKER).all(), "a calibration sample does not come from the evaluation data"
  return np.rint((x[:, 0] - EVAL_MARKER) * 1000).astype(int)


def input_fns(labels_permuted=False):
  train_x, train_y, eval_x, eval_y = digits()
  if labels_permuted:
    eval_y = np.random.default_rng(1).permutation(eval_y)

  def train_input_fn():
    return tf.data.Dataset.from_tensor_slices(({"x": train_x}, train_y)).repeat().batch(32)

  def eval_input_fn():
    return tf.data.Dataset.from_tensor_slices(({"x": eval_x}, eval_y)).batch(EVAL_BATCH)
  return train_input_fn, eval_input_fn


def linear_model_fn(features, labels, mode):
  """A custom model_fn: softmax regression on the 64 pixels."""
  w = tf.compat.v1.get_variable("w", [64, 10], initializer=tf.compat.v1.zeros_initializer())
  b = tf.compat.v1.get_variable("b", [10], initializer=tf.compat.v1.zeros_initializer())
  logits = tf.matmul(features["x"], w) + b
  predictions = {"probabilities": tf.nn.softmax(logits), "classes": tf.argmax(logits, axis=1)}
  if mode == tf.estimator.ModeKeys.PREDICT:
    return tf.estimator.EstimatorSpec(
        mode, predictions=predictions,
        export_outputs={"serving_default": tf.estimator.export.PredictOutput(predictions)})
  loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
  train_op = tf.compat.v1.train.GradientDescentOptimizer(0.5).minimize(
      loss, global_step=tf.compat.v1.train.get_global_step())
  return tf.estimator.EstimatorSpec(
      mode, loss=loss, train_op=train_op,
      eval_metric_ops={"accuracy": tf.compat.v1.metrics.accuracy(labels, predictions["classes"])})


def raw_receiver_fn():
  return tf.estimator.export.build_raw_serving_input_receiver_fn({"x": tf.zeros([1, 64], tf.float32)})


def custom_estimator(model_dir, save_every=20):
  config = tf.estimator.RunConfig(save_checkpoints_steps=save_every, tf_random_seed=0, log_step_count_steps=10000,
                                  keep_checkpoint_max=50)
  return tf.estimator.Estimator(linear_model_fn, model_dir=str(model_dir), config=config)


def feature_columns():
  return [tf.feature_column.numeric_column("x", shape=[64])]


def parsing_receiver_fn():
  return tf.estimator.export.build_parsing_serving_input_receiver_fn(
      tf.feature_column.make_parse_example_spec(feature_columns()))


def dnn_classifier(model_dir):
  config = tf.estimator.RunConfig(save_checkpoints_steps=20, tf_random_seed=0, log_step_count_steps=10000,
                                  keep_checkpoint_max=50)
  return tf.estimator.DNNClassifier([16], feature_columns(), n_classes=10, model_dir=str(model_dir), config=config)


def train_and_evaluate(estimator, exporter, max_steps, labels_permuted=False):
  train_input_fn, eval_input_fn = input_fns(labels_permuted)
  tf.estimator.train_and_evaluate(
      estimator, tf.estimator.TrainSpec(train_input_fn, max_steps=max_steps),
      tf.estimator.EvalSpec(eval_input_fn, steps=None, exporters=[exporter], hooks=[exporter.calibration_hook],
                            start_delay_secs=0, throttle_secs=0))


def fast_options(**kwargs):
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  return ConversionOptions(verify_warmup_runs=1, verify_timed_runs=2, **kwargs)


def manifests(root):
  from tftrt_keras.artifacts.layout import ExportLayout  # pylint: disable=g-import-not-at-top
  return ExportLayout(root).manifests()


def numbered_dirs(directory):
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(directory) else []


def stored_samples(root, manifest, file_key):
  """The calibration (`file`) or verification (`verification_file`) samples of one export."""
  from tftrt_keras.samples import calibration_data  # pylint: disable=g-import-not-at-top
  entry = manifest["artifacts"]["calibration"]
  directory = os.path.normpath(os.path.join(root, "manifests", str(manifest["version"]), entry["path"]))
  return calibration_data.load_samples(os.path.join(directory, entry[file_key]))


def calibration_arrays(root, manifest):
  """calibration.npz and verification.npz of one export, concatenated (they never share a sample)."""
  entry = manifest["artifacts"]["calibration"]
  arrays = [stored_samples(root, manifest, "file")]
  if entry.get("verification_file"):
    arrays.append(stored_samples(root, manifest, "verification_file"))
  return {k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]}


def assert_spread_over_the_pass(rows, total_rows, what):
  """Rows from the first and from the last quarter of the evaluation pass are both present."""
  assert rows.min() < total_rows // 4 and rows.max() >= total_rows - total_rows // 4, f"{what}: {sorted(rows)}"


@pytest.fixture(scope="module")
def trained_custom_estimator(tmp_path_factory):
  """A custom-model_fn Estimator trained for 10 steps; its checkpoint is what direct `export` calls export."""
  if not HAS_ESTIMATOR:
    pytest.skip(f"TensorFlow {tf.__version__} has no tf.estimator (Estimator is TF 2.15 only)")
  estimator = custom_estimator(tmp_path_factory.mktemp("custom_model"))
  train_input_fn, _ = input_fns()
  estimator.train(train_input_fn, max_steps=10)
  return estimator


# ---------------------------------------------------------------------------------------------- TF 2.17
@pytest.mark.unit
def test_import_without_estimator_says_tf215_supports_it():
  """Without tf.estimator (TF 2.16+), importing the exporter raises ImportError naming TF 2.15. On TF 2.15 the
  missing package is simulated in a child process."""
  code = ("import sys\n"
          "if len(sys.argv) > 1: sys.modules['tensorflow_estimator'] = None\n"
          "import tftrt_keras\n"
          "try:\n"
          "  tftrt_keras.TrtExporter\n"
          "except ImportError as err:\n"
          "  print('IMPORT_ERROR:', err)\n")
  args = [sys.executable, "-c", code] + (["hide-estimator"] if HAS_ESTIMATOR else [])
  result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  line = next(l for l in result.stdout.splitlines() if l.startswith("IMPORT_ERROR:"))
  assert "TensorFlow 2.15" in line and "tf.estimator" in line and "TrtExport" in line


# ---------------------------------------------------------------------------------------------- bad input
@needs_estimator
@pytest.mark.unit
@pytest.mark.parametrize("kwargs, argument", [
    (dict(precisions=("FP8",)), "precisions"),
    (dict(calibration_batches=-1), "calibration_batches"),
    (dict(calibration_batches=2.5), "calibration_batches"),
    (dict(precisions=("FP16", "INT8"), calibration_batches=0), "calibration_batches"),
    (dict(compare_fn=lambda a, b: True), "compare_fn"),
    (dict(compare_fn="loss"), "compare_fn"),
    (dict(compare_fn=lambda best_eval_result, current_eval_result: True, policy="latest"), "compare_fn"),
    (dict(policy="sometimes"), "policy"),
    (dict(name=""), "name"),
    (dict(name="a/b"), "name"),
    (dict(name=None), "name"),
    (dict(exports_to_keep=0), "exports_to_keep"),
    (dict(max_batch_size=0), "max_batch_size"),
    (dict(serving_input_receiver_fn=None), "serving_input_receiver_fn"),
    (dict(calibration_input_fn=[1, 2]), "calibration_input_fn"),
    (dict(options=fast_options(), minimum_segment_size=5), "options"),
    (dict(options=fast_options(), formats=("onnx",)), "options"),
    (dict(options="FP16"), "options"),
    (dict(signature_key=""), "signature_key"),
    (dict(signature_key=3), "signature_key"),
    (dict(formats=("tensorflow",)), "formats"),
    (dict(format_options={"bogus": {}}), "format_options"),
    (dict(conversion_policy="sometimes"), "conversion_policy"),
    (dict(verification_samples=0), "verification_samples"),
    (dict(conversion_device="tpu:0"), "conversion_device"),
    (dict(triton_repository=""), "triton_repository"),
    (dict(triton_model_name=7), "triton_model_name"),
])
def test_bad_argument_raises_value_error_naming_it(kwargs, argument):
  """Each bad argument is refused in __init__ with the library's one message shape, naming the argument."""
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  arguments = dict(name="trt", serving_input_receiver_fn=raw_receiver_fn())
  arguments.update(kwargs)
  with pytest.raises(ValueError) as info:
    TrtExporter(**arguments)
  assert f"Invalid value for argument `{argument}`" in str(info.value)
  assert "Received:" in str(info.value) and "Expected" in str(info.value)


@needs_estimator
@pytest.mark.unit
def test_int8_without_captured_batches_is_fine_with_calibration_input_fn():
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  exporter = TrtExporter("trt", raw_receiver_fn(), precisions=("INT8",), calibration_batches=0,
                         calibration_input_fn=lambda: [])
  assert exporter.options.precisions == ("INT8",) and isinstance(exporter, tf.estimator.Exporter)


@needs_estimator
@pytest.mark.unit
def test_require_tensorrt_fails_in_init_before_training(tmp_path):
  """require_tensorrt=True on a machine without TF-TRT raises at construction: no training step is wasted."""
  from tftrt_keras import TensorRTUnavailableError, TrtExporter  # pylint: disable=g-import-not-at-top
  from tftrt_keras.preflight import check_tftrt  # pylint: disable=g-import-not-at-top
  if check_tftrt().usable:
    pytest.skip("TF-TRT can run here, so require_tensorrt=True is satisfied")
  with pytest.raises(TensorRTUnavailableError, match="require_tensorrt=True"):
    TrtExporter("trt", raw_receiver_fn(), require_tensorrt=True)


# ---------------------------------------------------------------------------------------------- signature
@needs_estimator
@pytest.mark.unit
@pytest.mark.parametrize("available, requested, chosen", [
    (["classification", "predict", "serving_default"], None, "serving_default"),
    (["predict"], None, "predict"),
    (["classification", "predict", "regression"], None, "predict"),
    (["scores"], None, "scores"),
    (["predict", "serving_default"], "predict", "predict"),
])
def test_signature_a_user_means_is_chosen(available, requested, chosen):
  from tftrt_keras.estimator.exporter import choose_signature_key  # pylint: disable=g-import-not-at-top
  assert choose_signature_key(available, requested) == chosen


@needs_estimator
@pytest.mark.unit
@pytest.mark.parametrize("available, requested", [(["predict"], "serving_default"), (["a", "b"], None), ([], None)])
def test_unavailable_or_ambiguous_signature_is_refused_listing_the_available(available, requested):
  from tftrt_keras.estimator.exporter import choose_signature_key  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError) as info:
    choose_signature_key(available, requested)
  assert "Invalid value for argument `signature_key`" in str(info.value)
  assert f"signatures {sorted(available)}" in str(info.value)


# ---------------------------------------------------------------------------------------------- flags
@needs_estimator
@pytest.mark.unit
def test_from_flags_builds_the_exporter_the_flags_describe():
  """Flags (set with flagsaver) choose the formats, precisions, retention, capture and verification sizes, the
  signature, the worker's device and the best-model policy; keyword arguments win over them."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  from tftrt_keras import flags as tftrt_flags  # pylint: disable=g-import-not-at-top
  if "export_calibration_batches" not in flags.FLAGS:  # as a training script does, once per process
    # The whole set, as tests/test_flags.py defines it: whichever runs first defines it for both.
    tftrt_flags.define_export_flags()
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  with flagsaver.flagsaver(export_precisions=["fp16"], export_calibration_batches=3, export_exports_to_keep=2,
                           export_save_best_only=True, export_monitor="val_accuracy", export_max_batch_size=16,
                           export_formats=["onnx"], export_format_options={"onnx": {}},
                           export_conversion_policy="every", export_verification_samples=200,
                           export_conversion_device="cpu", export_triton_repository="/tmp/triton_repo",
                           export_triton_model_name="digits", export_signature_key="predict"):
    exporter = TrtExporter.from_flags(flags.FLAGS, "from_flags", raw_receiver_fn())
    overridden = TrtExporter.from_flags(flags.FLAGS, "over", raw_receiver_fn(), precisions=("FP32",),
                                        calibration_batches=5, formats=("tftrt",), signature_key=None)
  options = exporter.options
  assert options.precisions == ("FP16",) and options.max_batch_size == 16 and options.formats == ("onnx",)
  assert set(options.format_options) == {"onnx"}
  assert options.conversion_policy == "every" and options.verification_samples == 200
  assert options.conversion_device == "cpu"
  assert (options.triton_repository, options.triton_model_name) == ("/tmp/triton_repo", "digits")
  assert exporter.signature_key == "predict"
  assert exporter.calibration_hook.capacity == 3 and exporter.calibration_hook.verification_samples == 200
  assert exporter.policy == "best" and exporter.exports_to_keep == 2
  # --export_monitor=val_accuracy: the Estimator's `accuracy`, higher is better.
  assert exporter.compare_fn(best_eval_result={"accuracy": 0.5}, current_eval_result={"accuracy": 0.6})
  assert not exporter.compare_fn(best_eval_result={"accuracy": 0.5}, current_eval_result={"accuracy": 0.4})
  assert overridden.options.precisions == ("FP32",) and overridden.options.max_batch_size == 16
  assert overridden.options.formats == ("tftrt",) and overridden.signature_key is None
  assert overridden.calibration_hook.capacity == 5
  with flagsaver.flagsaver(export_save_best_only=False):
    assert TrtExporter.from_flags(flags.FLAGS, "every", raw_receiver_fn()).policy == "latest"


@needs_estimator
@pytest.mark.unit
def test_from_flags_leaves_undefined_flags_at_the_defaults():
  """A script that defines only some flags (here none) gets the constructor's defaults for the rest."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  empty = flags.FlagValues()
  empty.mark_as_parsed()
  exporter = TrtExporter.from_flags(empty, "bare", raw_receiver_fn())
  assert exporter.options == ConversionOptions()
  assert exporter.exports_to_keep == 5 and exporter.calibration_hook.capacity == 16 and exporter.policy == "latest"
  assert exporter.signature_key is None


# ---------------------------------------------------------------------------------------------- direct calls
@needs_estimator
@pytest.mark.tf
def test_normal_export_is_what_best_exporter_writes(trained_custom_estimator, tmp_path):
  """Same estimator, same checkpoint: TrtExporter's normal export serves exactly what BestExporter's does, and
  export() returns the same kind of value (the path as returned by export_saved_model)."""
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  estimator = trained_custom_estimator
  checkpoint = estimator.latest_checkpoint()
  result = {"loss": 1.0, "global_step": 10}
  ours = TrtExporter("trt", raw_receiver_fn(), precisions=("FP32",), calibration_batches=0, formats=())
  path = ours.export(estimator, str(tmp_path / "ours"), checkpoint, result, True)
  theirs = tf.estimator.BestExporter("best", raw_receiver_fn()).export(
      estimator, str(tmp_path / "theirs"), checkpoint, result, True)
  assert type(path) is type(theirs)
  path, theirs = tf.compat.as_str_any(path), tf.compat.as_str_any(theirs)
  assert os.path.dirname(path) == str(tmp_path / "ours") and os.path.basename(path).isdigit()
  x = digits()[2][:5]
  ours_loaded, theirs_loaded = tf.saved_model.load(path), tf.saved_model.load(theirs)
  ours_out = ours_loaded.signatures["serving_default"](x=tf.constant(x))
  theirs_out = theirs_loaded.signatures["serving_default"](x=tf.constant(x))
  assert sorted(ours_out) == sorted(theirs_out) == ["classes", "probabilities"]
  for key in ours_out:
    np.testing.assert_array_equal(ours_out[key].numpy(), theirs_out[key].numpy())
  # Beside it: the manifest of this version, closed (final export waits), listing the normal export.
  (manifest_path,) = ours.manifest_paths
  manifest = json.load(open(manifest_path))
  assert manifest["version"] == int(os.path.basename(path))
  assert manifest["artifacts"]["native"]["status"] == "ok"
  assert manifest["source"]["kind"] == "estimator" and manifest["source"]["step"] == 10
  assert manifest["source"]["checkpoint_path"] == checkpoint
  assert all(e["status"] != "pending" for e in manifest["artifacts"].values())


@needs_estimator
@pytest.mark.tf
def test_best_policy_exports_only_improvements_and_final_policy_only_at_the_end(trained_custom_estimator, tmp_path):
  """policy='best' (default): export when the loss improves; compare_fn changes the criterion; 'final': only
  the final export."""
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  estimator = trained_custom_estimator
  checkpoint = estimator.latest_checkpoint()
  best = TrtExporter("best", raw_receiver_fn(), precisions=("FP32",), calibration_batches=0, formats=())
  root = str(tmp_path / "best")
  exported = [best.export(estimator, root, checkpoint, {"loss": loss, "global_step": 10}, final) is not None
              for loss, final in [(1.0, False), (2.0, False), (0.5, False), (3.0, True)]]
  assert exported == [True, False, True, False]
  assert len(numbered_dirs(root)) == 2 and len(best.manifest_paths) == 2
  assert best.best_eval_result["loss"] == 0.5

  by_accuracy = TrtExporter("acc", raw_receiver_fn(), precisions=("FP32",), calibration_batches=0, formats=(),
                            compare_fn=lambda best_eval_result, current_eval_result:
                            current_eval_result["accuracy"] > best_eval_result["accuracy"])
  root = str(tmp_path / "acc")
  exported = [by_accuracy.export(estimator, root, checkpoint, {"loss": 1.0, "accuracy": acc}, final) is not None
              for acc, final in [(0.5, False), (0.4, False), (0.6, True)]]
  assert exported == [True, False, True]

  final = TrtExporter("final", raw_receiver_fn(), precisions=("FP32",), calibration_batches=0, formats=(),
                      policy="final")
  root = str(tmp_path / "final")
  assert final.export(estimator, root, checkpoint, {"loss": 0.1}, False) is None
  assert not os.path.exists(root)
  assert final.export(estimator, root, checkpoint, {"loss": 9.0}, True) is not None
  assert len(numbered_dirs(root)) == 1


@needs_estimator
@pytest.mark.tf
def test_calibration_input_fn_supplies_the_samples(trained_custom_estimator, tmp_path):
  """calibration_input_fn instead of the hook: its features become the stored samples, keyed by the raw
  signature's input name; at most calibration_batches batches are taken."""
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  x = np.arange(6 * 64, dtype="float32").reshape(6, 64) / 1000.0

  def calibration_input_fn():
    return tf.data.Dataset.from_tensor_slices(({"x": x}, np.zeros(6, "int64"))).batch(2)
  exporter = TrtExporter("trt", raw_receiver_fn(), precisions=("INT8",), calibration_batches=2,
                         calibration_input_fn=calibration_input_fn, formats=("tftrt",))
  root = str(tmp_path / "export")
  path = exporter.export(trained_custom_estimator, root, trained_custom_estimator.latest_checkpoint(),
                         {"loss": 1.0, "global_step": 10}, True)
  assert path is not None
  (manifest_path,) = exporter.manifest_paths
  manifest = json.load(open(manifest_path))
  samples = calibration_arrays(root, manifest)
  order = np.argsort(samples["x"][:, 1])  # calibration and held-out samples, back in their original order
  np.testing.assert_array_equal(samples["x"][order], x[:4])
  assert manifest["source"]["calibration"]["from"] == "calibration_input_fn"


@needs_estimator
@pytest.mark.tf
def test_without_the_hook_the_manifest_says_how_to_get_calibration_data(trained_custom_estimator, tmp_path):
  """calibration_batches > 0 but calibration_hook never ran: calibration and INT8 are skipped, and the reason
  tells the user to add the hook; FP32 is still attempted."""
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  exporter = TrtExporter("trt", raw_receiver_fn(), precisions=("FP32", "INT8"), calibration_batches=4,
                         formats=("tftrt",))
  exporter.export(trained_custom_estimator, str(tmp_path / "export"), trained_custom_estimator.latest_checkpoint(),
                  {"loss": 1.0, "global_step": 10}, True)
  manifest = json.load(open(exporter.manifest_paths[-1]))
  assert manifest["artifacts"]["calibration"]["status"] == "skipped"
  assert "exporter.calibration_hook" in manifest["artifacts"]["calibration"]["reason"]
  assert manifest["artifacts"]["tftrt_int8"]["status"] == "skipped"
  # Built; with no samples nothing compared it with the normal export, and it says so.
  assert manifest["artifacts"]["frozen"]["status"] == "unverified"
  assert manifest["artifacts"]["frozen"]["reason"].startswith("no held-out samples")


@needs_estimator
@pytest.mark.tf
def test_failure_while_preparing_is_recorded_not_raised(trained_custom_estimator, tmp_path):
  """An exception after the normal export (here: a broken calibration_input_fn) leaves the normal export in
  place, returns its path, and the manifest records the failure with its cause."""
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top

  def broken_calibration_input_fn():
    raise RuntimeError("calibration source is offline")
  exporter = TrtExporter("trt", raw_receiver_fn(), precisions=("FP32", "INT8"), calibration_batches=0,
                         calibration_input_fn=broken_calibration_input_fn, formats=("tftrt",))
  root = str(tmp_path / "export")
  path = exporter.export(trained_custom_estimator, root, trained_custom_estimator.latest_checkpoint(),
                         {"loss": 1.0, "global_step": 10}, True)
  path = tf.compat.as_str_any(path)
  assert os.path.isfile(os.path.join(path, "saved_model.pb"))
  manifest = json.load(open(exporter.manifest_paths[-1]))
  assert manifest["artifacts"]["native"]["status"] == "ok"
  for name in ("frozen", "calibration", "tftrt_fp32", "tftrt_int8"):
    assert manifest["artifacts"][name]["status"] == "failed"
    assert "calibration source is offline" in manifest["artifacts"][name]["reason"]


@needs_estimator
@pytest.mark.tf
def test_directory_owned_by_another_run_gets_the_normal_export_only(trained_custom_estimator, tmp_path):
  """While another process holds the export directory's lock, export() still writes and returns the normal
  export, and writes nothing of ours into the directory (no manifest, no variant)."""
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  from tftrt_keras.artifacts.layout import ExportLayout, RootLock  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / "export")
  exporter = TrtExporter("trt", raw_receiver_fn(), precisions=("FP32",), calibration_batches=0, formats=())
  with RootLock(ExportLayout(root)):  # a second open file description: flock treats it as another owner
    path = exporter.export(trained_custom_estimator, root, trained_custom_estimator.latest_checkpoint(),
                           {"loss": 1.0, "global_step": 10}, True)
  assert os.path.isfile(os.path.join(tf.compat.as_str_any(path), "saved_model.pb"))
  assert not os.path.exists(os.path.join(root, "manifests")) and exporter.manifest_paths == []


# ---------------------------------------------------------------------------------------------- train_and_evaluate
VERIFICATION_SAMPLES = 100


@needs_estimator
@pytest.mark.tf
def test_canned_estimator_parsing_signature_end_to_end(tmp_path, fake_tftrt):
  """DNNClassifier + parsing serving signature, train_and_evaluate. Uses the TEST DOUBLE backend
  (FakeTrtBackendForTests) so that converted variants exist on disk.

  The calibration and verification samples are serialized tf.Examples (the signature's input), decode to
  evaluation rows only, never share a row, are each spread over the whole evaluation pass, and the frozen
  graph of the parsing signature answers like the normal export on them.
  """
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.frozen import run_frozen_graph  # pylint: disable=g-import-not-at-top
  estimator = dnn_classifier(tmp_path / "model")
  exporter = TrtExporter("trt", parsing_receiver_fn(), calibration_batches=8,
                         options=fast_options(formats=("tftrt",),
                                                         verification_samples=VERIFICATION_SAMPLES))
  train_and_evaluate(estimator, exporter, max_steps=60)
  root = str(tmp_path / "model" / "export" / "trt")
  manifest = manifests(root)[-1]
  assert [p for p in exporter.manifest_paths] == [
      os.path.join(root, "manifests", str(m["version"]), "manifest.json") for m in manifests(root)]
  # A 60-step model may answer one class for (almost) every verification sample: until a comparison of its
  # varying scores vouches for it, that leaves the variants unverified for that stated reason.
  statuses = {name: "ok" if entry["status"] == "unverified" and "top-1 class" in entry.get("reason", "") else
              entry["status"] for name, entry in manifest["artifacts"].items()}
  assert statuses == {"native": "ok", "frozen": "ok", "calibration": "ok", "tftrt_fp32": "ok",
                      "tftrt_fp16": "ok", "tftrt_int8": "ok"}, manifest["artifacts"]
  version = manifest["version"]
  for artifact in ("tftrt_fp32", "tftrt_fp16", "tftrt_int8"):
    assert os.path.isfile(os.path.join(root, artifact, str(version), "saved_model.pb"))
  assert manifest["source"]["step"] == 60 and "loss" in manifest["source"]["metrics"]

  # Stored as the signature takes it: serialized tf.Examples under the signature's (only) input name.
  eval_rows = len(digits()[2])
  rows = {}
  for file_key in ("file", "verification_file"):
    samples = stored_samples(root, manifest, file_key)
    (input_name,) = samples
    assert samples[input_name].dtype.kind == "S"
    parsed = tf.io.parse_example(samples[input_name], tf.feature_column.make_parse_example_spec(feature_columns()))
    rows[file_key] = eval_rows_of(parsed["x"].numpy())
    assert len(set(rows[file_key])) == len(rows[file_key])
  calibration_rows, verification_rows = rows["file"], rows["verification_file"]
  origin = manifest["source"]["calibration"]
  assert origin["from"] == "evaluation" and origin["eval_step"] == 60
  batches = sorted(set(calibration_rows // EVAL_BATCH))
  assert batches == origin["batch_indices"] and len(batches) >= 8  # rows of the kept batches, split by sample
  assert len(calibration_rows) == manifest["artifacts"]["calibration"]["samples"] <= 8 * EVAL_BATCH
  assert origin["batches_in_evaluation"] == -(-eval_rows // EVAL_BATCH)
  # Verification: its own sample of the pass, as many as asked, sharing no row with calibration.
  assert len(verification_rows) == VERIFICATION_SAMPLES == manifest["artifacts"]["calibration"]["verification_samples"]
  assert origin["verification"]["samples"] == VERIFICATION_SAMPLES
  assert set(verification_rows // EVAL_BATCH) <= set(origin["verification"]["batch_indices"])
  assert not set(calibration_rows) & set(verification_rows)
  # Each spread over the whole pass, not the first batches or the tail: rows from the first and last quarter.
  assert_spread_over_the_pass(calibration_rows, eval_rows, "calibration")
  assert_spread_over_the_pass(verification_rows, eval_rows, "verification")
  assert manifest["verification"]["samples"] == VERIFICATION_SAMPLES

  # The parsing signature froze; the frozen graph answers like the normal export on the stored examples.
  samples = calibration_arrays(root, manifest)
  native = tf.saved_model.load(os.path.join(root, str(version)))
  expected = native.signatures["serving_default"](**{input_name: tf.constant(samples[input_name])})
  frozen = run_frozen_graph(os.path.join(root, "frozen", str(version)), {input_name: samples[input_name]})
  np.testing.assert_allclose(frozen["scores"], expected["scores"].numpy(), rtol=1e-5, atol=1e-6)


@needs_estimator
@pytest.mark.tf
def test_custom_model_fn_latest_policy_keeps_newest_exports(tmp_path):
  """Custom model_fn, raw signature, policy='latest', exports_to_keep=2, the real TF-TRT backend: every
  evaluation exports, only the newest two exports remain (normal exports included), and the samples are the
  raw evaluation features. The TF-TRT variants are `ok` where TF-TRT runs, else `skipped` with the
  preflight's reason."""
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  from tftrt_keras.preflight import check_tftrt  # pylint: disable=g-import-not-at-top
  estimator = custom_estimator(tmp_path / "model", save_every=10)
  exporter = TrtExporter("trt", raw_receiver_fn(), policy="latest", exports_to_keep=2, calibration_batches=4,
                         options=fast_options(precisions=("FP32", "INT8"), formats=("tftrt",)))
  train_and_evaluate(estimator, exporter, max_steps=30)
  root = str(tmp_path / "model" / "export" / "trt")
  kept = manifests(root)
  versions = [m["version"] for m in kept]
  assert len(versions) == 2 and numbered_dirs(root) == versions
  assert numbered_dirs(os.path.join(root, "frozen")) == [v for v in versions if os.path.isdir(
      os.path.join(root, "frozen", str(v)))]
  # Every evaluation exported (steps 10, 20, 30); the two kept are the newest.
  assert [m["source"]["step"] for m in kept] == [20, 30]
  last = kept[-1]
  assert last["signature_key"] == "serving_default"
  tensorrt = check_tftrt()
  for artifact in ("tftrt_fp32", "tftrt_int8"):
    entry = last["artifacts"][artifact]
    if tensorrt.usable:
      assert entry["status"] == "ok" and entry["engines_prebuilt_for"], entry
    else:
      assert entry["status"] == "skipped" and entry["reason"] == tensorrt.reason, entry
  samples = calibration_arrays(root, last)
  assert list(samples) == ["x"] and samples["x"].dtype == np.float32 and samples["x"].shape[1:] == (64,)
  eval_rows_of(samples["x"])


@needs_estimator
@pytest.mark.tf
def test_restart_recovers_best_loss_and_does_not_export_worse_model(tmp_path):
  """A second train_and_evaluate on the same model_dir (new exporter, as after a restart) reads the best loss
  from the evaluation event files and does not export its worse evaluations (BestExporter would export the
  first one)."""
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  model_dir = tmp_path / "model"
  root = str(model_dir / "export" / "trt")

  def new_exporter():
    return TrtExporter("trt", raw_receiver_fn(), precisions=("FP32",), calibration_batches=2, formats=())
  first = new_exporter()
  train_and_evaluate(custom_estimator(model_dir), first, max_steps=40)
  before = manifests(root)
  assert before, "the first run exported nothing"
  best_loss = min(m["source"]["metrics"]["loss"] for m in before)

  second = new_exporter()
  # Permuted evaluation labels: every evaluation of the second run is much worse than the first run's best.
  train_and_evaluate(custom_estimator(model_dir), second, max_steps=60, labels_permuted=True)
  assert [m["version"] for m in manifests(root)] == [m["version"] for m in before]
  assert numbered_dirs(root) == [m["version"] for m in before]
  assert second.best_eval_result["loss"] == pytest.approx(best_loss, rel=1e-5)

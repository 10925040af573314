"""`TrtExporter` with canned Estimators, each served through a raw and through a parsing receiver (TF 2.15).

A canned Estimator exported through a raw receiver of float placeholders has only a `predict` signature (its
classification and regression signatures need one string input, so the Estimator drops them); through a
parsing receiver it has `serving_default` too. The exporter must pick the signature a user means, say which in
the manifest, and capture calibration and verification samples in that signature's form.

Each estimator trains once, briefly, with both exporters in one `EvalSpec`: one evaluation, one export each.
No variant is built (`formats=()`): what is checked here is the signature, the frozen graph and the samples.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

HAS_ESTIMATOR = hasattr(tf, "estimator")
pytestmark = pytest.mark.skipif(
    not HAS_ESTIMATOR, reason=f"TensorFlow {tf.__version__} has no tf.estimator (Estimator is TF 2.15 only)")

FEATURES = 4
N_CLASSES = 3
EVAL_ROWS = 160
EVAL_BATCH = 8
TRAIN_STEPS = 8
CALIBRATION_BATCHES = 3
VERIFICATION_SAMPLES = 120  # 100 agreeing samples are the fewest whose bound passes 0.97


def columns():
  return [tf.feature_column.numeric_column("x", shape=[FEATURES])]


def raw_receiver_fn():
  return tf.estimator.export.build_raw_serving_input_receiver_fn({"x": tf.zeros([1, FEATURES], tf.float32)})


def parsing_receiver_fn():
  return tf.estimator.export.build_parsing_serving_input_receiver_fn(
      tf.feature_column.make_parse_example_spec(columns()))


def input_fns(regression):
  """Tiny separable data; evaluation rows carry their row number in x[:, 3] (>= 100) to be recognised."""
  rng = np.random.default_rng(0)
  train_x = rng.normal(size=(256, FEATURES)).astype("float32")
  eval_x = rng.normal(size=(EVAL_ROWS, FEATURES)).astype("float32")
  eval_x[:, 3] = 100.0 + np.arange(EVAL_ROWS)

  def labels(x):
    if regression:
      return (x[:, 0] - x[:, 1]).astype("float32")
    return np.digitize(x[:, 0], [-0.5, 0.5]).astype("int64")

  def train_input_fn():
    return tf.data.Dataset.from_tensor_slices(({"x": train_x}, labels(train_x))).repeat().batch(32)

  def eval_input_fn():
    return tf.data.Dataset.from_tensor_slices(({"x": eval_x}, labels(eval_x))).batch(EVAL_BATCH)
  return train_input_fn, eval_input_fn


def make_estimator(kind, model_dir):
  config = tf.estimator.RunConfig(save_checkpoints_steps=TRAIN_STEPS, tf_random_seed=0, log_step_count_steps=10000)
  if kind == "DNNClassifier":
    return tf.estimator.DNNClassifier([8], columns(), n_classes=N_CLASSES, model_dir=model_dir, config=config)
  if kind == "DNNRegressor":
    return tf.estimator.DNNRegressor([8], columns(), model_dir=model_dir, config=config)
  return tf.estimator.LinearClassifier(columns(), n_classes=N_CLASSES, model_dir=model_dir, config=config)


def new_exporter(name, receiver_fn, **kwargs):
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  return TrtExporter(name, receiver_fn, policy="latest", calibration_batches=CALIBRATION_BATCHES,
                     options=ConversionOptions(formats=(), verification_samples=VERIFICATION_SAMPLES,
                                                          verify_warmup_runs=0, verify_timed_runs=1),
                     **kwargs)


def load_samples(root, manifest, file_key):
  from tftrt_keras.samples import calibration_data  # pylint: disable=g-import-not-at-top
  entry = manifest["artifacts"]["calibration"]
  directory = os.path.normpath(os.path.join(root, "manifests", str(manifest["version"]), entry["path"]))
  return calibration_data.load_samples(os.path.join(directory, entry[file_key]))


@pytest.fixture(scope="module", params=["DNNClassifier", "DNNRegressor", "LinearClassifier"])
def trained(request, tmp_path_factory):
  """One canned estimator trained briefly with a raw-receiver and a parsing-receiver exporter side by side.

  A third exporter names `signature_key="predict"` with the parsing receiver.

  Returns:
    (estimator kind, estimator, {exporter name: (exporter, export root)}).
  """
  kind = request.param
  model_dir = str(tmp_path_factory.mktemp(kind.lower()))
  estimator = make_estimator(kind, model_dir)
  exporters = {"raw": new_exporter("raw", raw_receiver_fn()), "parsing": new_exporter("parsing", parsing_receiver_fn()),
               "parsing_predict": new_exporter("parsing_predict", parsing_receiver_fn(), signature_key="predict")}
  train_input_fn, eval_input_fn = input_fns(regression=kind == "DNNRegressor")
  tf.estimator.train_and_evaluate(
      estimator, tf.estimator.TrainSpec(train_input_fn, max_steps=TRAIN_STEPS),
      tf.estimator.EvalSpec(eval_input_fn, steps=None, exporters=list(exporters.values()),
                            hooks=[e.calibration_hook for e in exporters.values()], start_delay_secs=0,
                            throttle_secs=0))
  return kind, estimator, {k: (e, os.path.join(model_dir, "export", k)) for k, e in exporters.items()}


def _only_manifest(exporter):
  (path,) = exporter.manifest_paths
  with open(path) as f:
    return json.load(f)


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.parametrize("exporter_name, requested, expected_key", [
    ("raw", None, "predict"), ("parsing", None, "serving_default"), ("parsing_predict", "predict", "predict")])
def test_export_uses_the_signature_a_user_means(trained, exporter_name, requested, expected_key):
  """Raw receiver: only `predict` exists and is used; parsing receiver: `serving_default`, or `predict` when
  signature_key says so. The manifest says which; the frozen graph of that signature is compared with the normal
  export (and `ok` where the outputs vary over the samples); calibration and
  verification samples are stored in its input form, come from the evaluation only, and never share a row."""
  kind, _, exporters = trained
  exporter, root = exporters[exporter_name]
  receiver = "raw" if exporter_name == "raw" else "parsing"
  manifest = _only_manifest(exporter)
  assert manifest["signature_key"] == expected_key
  assert manifest["source"]["signature"]["key"] == expected_key
  assert manifest["source"]["signature"]["requested"] == requested
  available = manifest["source"]["signature"]["available"]
  if receiver == "raw":  # classification and regression signatures need a string input: dropped
    assert available == ["predict"]
  else:
    assert {"serving_default", "predict"} <= set(available), available

  artifacts = manifest["artifacts"]
  assert artifacts["native"]["status"] == "ok"
  frozen = artifacts["frozen"]
  if kind == "DNNRegressor":
    assert frozen["status"] == "ok", frozen
  else:
    # The evaluation rows carry their row number (>= 100) in x[:, 3]: the briefly trained classifier puts every one
    # in the same class. One class alone does not keep the frozen graph's error on varying values from vouching for
    # it (verification names the one-class outputs: only a top-1 agreement cannot judge them); outputs saturated
    # at 1 do not vary, and the spread rule leaves it `unverified`, naming them and their spread.
    verification = manifest["verification"]
    assert verification.get("outputs_one_class"), verification
    steady = verification.get("outputs_not_varying") or {}
    assert all(words.startswith("spread across samples") for words in steady.values()), verification
    if steady:  # the DNN's probabilities, saturated at 1
      assert frozen["status"] == "unverified", frozen
      assert frozen["reason"] == ("the model's outputs do not vary enough over the held-out samples to judge ("
                                  + "; ".join(f"output `{o}`: {w}" for o, w in sorted(steady.items())) + ")")
    else:  # the linear model's scores vary: its one class does not matter to a tolerance
      assert frozen["status"] == "ok", frozen
  assert frozen["signature"]["signature_key"] == expected_key
  calibration = artifacts["calibration"]
  assert calibration["status"] == "ok", calibration
  assert calibration["samples"] == CALIBRATION_BATCHES * EVAL_BATCH
  assert 0 < calibration["verification_samples"] <= VERIFICATION_SAMPLES

  # The samples take the chosen signature's inputs, and decode to distinct evaluation rows.
  from tftrt_keras.estimator.calibration import signature_of  # pylint: disable=g-import-not-at-top
  signature, _ = signature_of(os.path.join(root, str(manifest["version"])), expected_key)
  rows = {}
  for file_key in ("file", "verification_file"):
    samples = load_samples(root, manifest, file_key)
    assert sorted(samples) == sorted(t.name for t in signature.inputs)
    (values,) = samples.values()
    if receiver == "parsing":
      values = tf.io.parse_example(values, tf.feature_column.make_parse_example_spec(columns()))["x"].numpy()
    assert values.shape[1:] == (FEATURES,) and (values[:, 3] >= 100).all(), f"{file_key}: not evaluation rows"
    rows[file_key] = set(np.rint(values[:, 3] - 100).astype(int).tolist())
  assert len(rows["file"]) == calibration["samples"]
  assert len(rows["verification_file"]) == calibration["verification_samples"]
  assert not rows["file"] & rows["verification_file"]

  # Verification ran on that signature: the frozen graph answered like the normal export.
  assert manifest["verification"]["samples"] == calibration["verification_samples"]
  outputs = frozen["verification"]["outputs"]
  assert outputs and frozen["verification"]["verdict"] == frozen["status"], (kind, frozen["verification"])
  for name, figures in outputs.items():
    assert figures.get("max_relative_error", 0.0) <= 1e-5 and figures.get("agreement", 1.0) == 1.0, (name, figures)


@pytest.mark.tf
def test_unknown_signature_key_is_refused_at_the_first_export_listing_the_available(trained, tmp_path):
  """A signature_key the export lacks raises ValueError naming signature_key and the available signatures at
  the first export; the normal export is written (it is what the user gets anyway), nothing of ours is."""
  _, estimator, _ = trained
  exporter = new_exporter("wrong", raw_receiver_fn(), signature_key="serving_default")
  root = str(tmp_path / "wrong")
  with pytest.raises(ValueError) as info:
    exporter.export(estimator, root, estimator.latest_checkpoint(), {"loss": 1.0, "global_step": TRAIN_STEPS}, True)
  message = str(info.value)
  assert "Invalid value for argument `signature_key`" in message and "signature_key='serving_default'" in message
  assert "['predict']" in message
  assert exporter.manifest_paths == [] and not os.path.exists(os.path.join(root, "manifests"))

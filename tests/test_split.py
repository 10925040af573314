"""TF runs the string/lookup front, ONNX and TensorRT-RTX the numeric back (`pipeline.split`), end to end.

Models: a tf.Module whose string input goes through a StaticHashTable into an embedding beside a numeric input;
a Keras model with StringLookup exported by Keras itself (`model.export`); a canned DNNClassifier with a
vocabulary column (TF 2.15). Each goes through the offline exporter (`tftrt-export`'s library half) or
`TrtExporter`, and its variants are verified end to end on the user's string inputs.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tftrt_keras.formats.onnx import format as onnx_format

_MISSING = onnx_format.import_failure_reason(onnx_format._import_failures())  # pylint: disable=protected-access
pytestmark = [pytest.mark.tf, pytest.mark.skipif(_MISSING is not None, reason=f"ONNX packages unusable: {_MISSING}")]

COLORS = np.array([b"red", b"green", b"blue", b"cyan", b"unknown"])


class _ColorModel(tf.Module):
  """probabilities = softmax([embedding[table(color)], x] @ w); the table maps 4 colours, the rest to 4."""

  def __init__(self, seed):
    super().__init__()
    rng = np.random.default_rng(seed)
    self.table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(COLORS[:4]), tf.constant([0, 1, 2, 3], tf.int64)), default_value=4)
    self.embedding = tf.Variable(rng.normal(size=(5, 4)).astype("float32") * 3)
    self.w = tf.Variable(rng.normal(size=(6, 3)).astype("float32"))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="color"),
                                tf.TensorSpec([None, 2], tf.float32, name="x")])
  def serve(self, color, x):
    ids = self.table.lookup(color)
    features = tf.concat([tf.gather(self.embedding, ids), x], axis=1)
    return {"probabilities": tf.nn.softmax(tf.matmul(features, self.w))}


def color_model(path, seed):
  module = _ColorModel(seed)
  tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
  return str(path)


def color_samples(n, seed=0):
  rng = np.random.default_rng(seed)
  return {"color": COLORS[rng.integers(0, 5, n)], "x": rng.normal(size=(n, 2)).astype("float32")}


def options(**kwargs):
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  return ConversionOptions(**dict(dict(formats=("onnx", "trt_rtx"), precisions=("FP32", "FP16", "INT8"),
                                       verification_samples=200, verify_warmup_runs=0, verify_timed_runs=1),
                                  **kwargs))


def has_trt_rtx():
  from tftrt_keras.formats.tensorrt.rtx import FORMAT  # pylint: disable=g-import-not-at-top
  return FORMAT.unavailable_reason(None) is None


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """The colour model through the offline exporter, with a Triton repository."""
  from tftrt_keras.offline.export import export_saved_model  # pylint: disable=g-import-not-at-top
  base = tmp_path_factory.mktemp("split")
  model = color_model(base / "model", seed=0)
  manifest = export_saved_model(model, str(base / "exports"), calibration_data=color_samples(600),
                                options=options(triton_repository=str(base / "triton")))
  return base, manifest


def test_the_cut_is_where_the_lookup_ends_and_the_manifest_says_what_runs_where(exported):
  _, manifest = exported
  split = manifest["split"]
  assert [t["tensor"] for t in split["cut"]] == ["StatefulPartitionedCall/None_Lookup/LookupTableFindV2:0"]
  assert split["cut"][0]["dtype"] == "int64" and split["cut"][0]["shape"] == [None]
  assert split["front_inputs"] == ["color"] and split["back_inputs"] == ["x"]
  assert split["runs_in_tf"] == {"HashTableV2": 1, "LookupTableFindV2": 1}
  assert split["front"] == "../../front/1"
  assert manifest["artifacts"]["front"]["status"] == "ok"
  assert manifest["artifacts"]["front"]["checked"].startswith("passed: loads, and its 1 cut tensor(s) equal")


def test_onnx_variants_of_the_back_are_ok_end_to_end_on_the_string_inputs(exported):
  _, manifest = exported
  artifacts = manifest["artifacts"]
  assert artifacts["frozen"]["status"] == "ok", artifacts["frozen"]  # the tables' contents are in the graph
  for name in ("onnx_fp32", "onnx_fp16", "onnx_int8"):
    entry = artifacts[name]
    assert entry["status"] == "ok", (name, entry.get("reason"))
    assert entry["after_front"] == "front"
    assert entry["verification"]["samples"] >= 100
  assert artifacts["onnx_int8"]["quantized_ops"], artifacts["onnx_int8"]


def test_the_back_model_takes_the_cut_tensor_and_the_numeric_input(exported):
  import onnx  # pylint: disable=g-import-not-at-top
  base, manifest = exported
  cut = manifest["split"]["cut"][0]["name"]
  model = onnx.load(str(base / "exports" / "onnx_fp32" / "1" / "model.onnx"))
  assert sorted(i.name for i in model.graph.input) == sorted([cut, "x"])
  assert [o.name for o in model.graph.output] == ["probabilities"]
  assert not {n.op_type for n in model.graph.node} & {"CategoryMapper", "LabelEncoder"}


@pytest.mark.skipif(not has_trt_rtx(), reason="TensorRT-RTX (tensorrt-rtx-cu13) is not installed")
def test_trt_rtx_engines_build_from_the_back(exported):
  _, manifest = exported
  for precision in ("fp32", "fp16", "int8"):
    entry = manifest["artifacts"][f"trt_rtx_{precision}"]
    assert entry["status"] in ("ok", "unverified"), entry
    assert entry["engine_bytes"] > 0 and entry["after_front"] == "front"
    assert set(entry["profiles"]) == {manifest["split"]["cut"][0]["name"], "x"}


def test_the_front_loads_and_runs_alone(exported):
  base, manifest = exported
  loaded = tf.saved_model.load(str(base / "exports" / "front" / "1"))
  cut = manifest["split"]["cut"][0]["name"]
  ids = loaded.signatures["serving_default"](color=tf.constant([b"blue", b"red", b"magenta"]))[cut].numpy()
  np.testing.assert_array_equal(ids, [2, 0, 4])


def test_report_and_triton_say_what_runs_where(exported):
  base, manifest = exported
  report = (base / "exports" / "manifests" / "1" / "report.md").read_text()
  assert "onnx_fp32 (TF front + ONNX)" in report and "Split: TF front + ONNX/TensorRT" in report
  left_out = manifest["serving"]["triton"]["left_out"]
  assert "tensorflow_savedmodel backend" in left_out["onnx_fp32"]


def test_a_back_of_another_model_behind_this_front_is_rejected(exported, tmp_path):
  """The composition can fail: the same front with the ONNX back of a model with other weights is compared
  with this model's normal export through the product's own runner and verdict."""
  from tftrt_keras.agreement import compare_output, judge, thresholds_for  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx.runner import OnnxRuntimeRunner  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.savedmodel import SavedModelRunner  # pylint: disable=g-import-not-at-top
  from tftrt_keras.offline.export import export_saved_model  # pylint: disable=g-import-not-at-top
  from tftrt_keras.verify.split_runner import FrontThenBack  # pylint: disable=g-import-not-at-top
  base, manifest = exported
  other = export_saved_model(color_model(tmp_path / "other", seed=1), str(tmp_path / "exports"),
                             options=options(formats=("onnx",), precisions=("FP32",)))
  assert other["artifacts"]["onnx_fp32"]["status"] == "unverified"  # no samples given: nothing to judge on
  samples = color_samples(300, seed=5)
  reference = SavedModelRunner(str(base / "exports" / "1"), "serving_default").run(samples)
  verdicts = {}
  for label, back in (("own", base / "exports" / "onnx_fp32" / "1"), ("other", tmp_path / "exports" / "onnx_fp32" / "1")):
    with FrontThenBack(str(base / "exports" / "front" / "1"), OnnxRuntimeRunner(str(back))) as runner:
      figures = {"probabilities": compare_output(reference["probabilities"], runner.run(samples)["probabilities"])}
    options_ = options()
    verdicts[label] = judge("FP32", figures, thresholds_for("FP32", options_), {})[0]
  assert verdicts == {"own": "ok", "other": "rejected"}


@pytest.mark.slow
def test_keras_string_lookup_model_export_gets_a_split(tmp_path, primary_keras):
  """A model Keras itself exported (`model.export`): StringLookup over a string input beside a numeric one."""
  from tftrt_keras.offline.export import export_saved_model  # pylint: disable=g-import-not-at-top
  keras = primary_keras
  color = keras.Input((1,), dtype="string", name="color")
  x = keras.Input((2,), name="x")
  ids = keras.layers.StringLookup(vocabulary=["red", "green", "blue", "cyan"], output_mode="one_hot")(color)
  hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([keras.layers.Flatten()(ids), x]))
  model = keras.Model([color, x], keras.layers.Dense(3, activation="softmax", name="probs")(hidden))
  if not hasattr(model, "export"):
    pytest.skip(f"Keras {keras.__version__} has no model.export")
  model.export(str(tmp_path / "model"))
  samples = color_samples(400)
  samples["color"] = samples["color"].reshape(-1, 1)
  manifest = export_saved_model(str(tmp_path / "model"), str(tmp_path / "exports"), calibration_data=samples,
                                options=options(formats=("onnx",), precisions=("FP32", "INT8")))
  artifacts = manifest["artifacts"]
  assert [t["tensor"].rsplit("/", 1)[-1] for t in manifest["split"]["cut"]] == ["LookupTableFindV2:0"]
  assert artifacts["frozen"]["status"] == "ok", artifacts["frozen"]
  assert artifacts["onnx_fp32"]["status"] == "ok", artifacts["onnx_fp32"]
  assert artifacts["onnx_int8"]["status"] in ("ok", "unverified"), artifacts["onnx_int8"]
  if artifacts["onnx_int8"]["status"] == "unverified":
    assert "too few verification samples" in artifacts["onnx_int8"]["reason"]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(tf, "estimator"), reason=f"TensorFlow {tf.__version__} has no tf.estimator")
def test_estimator_vocabulary_column_gets_a_frozen_graph_and_a_split(tmp_path):
  """DNNClassifier + categorical_column_with_vocabulary_list, raw receiver, TrtExporter: the frozen graph (was
  "Failed to import metagraph") is ok, the cut is at the feature column's SparseToDense, the ONNX back is ok."""
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  color = tf.feature_column.categorical_column_with_vocabulary_list("color", ["red", "green", "blue", "cyan"])
  columns = [tf.feature_column.numeric_column("x", shape=[2]), tf.feature_column.indicator_column(color)]
  config = tf.estimator.RunConfig(save_checkpoints_steps=40, tf_random_seed=0, log_step_count_steps=10000)
  estimator = tf.estimator.DNNClassifier([8], columns, n_classes=3, model_dir=str(tmp_path / "model"), config=config)
  receiver = tf.estimator.export.build_raw_serving_input_receiver_fn(
      {"x": tf.zeros([1, 2], tf.float32), "color": tf.constant(["red"])})
  exporter = TrtExporter("split", receiver, policy="latest", calibration_batches=40,
                         options=options(formats=("onnx",), precisions=("FP32",)))

  def data(n, seed):
    features = color_samples(n, seed)
    labels = (np.isin(features["color"], COLORS[:2]) + (features["x"][:, 0] > 0)).astype("int64")
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(16)
  tf.estimator.train_and_evaluate(
      estimator, tf.estimator.TrainSpec(lambda: data(640, 0).repeat(), max_steps=40),
      tf.estimator.EvalSpec(lambda: data(640, 1), steps=None, exporters=[exporter],
                            hooks=[exporter.calibration_hook], start_delay_secs=0, throttle_secs=0))
  (path,) = exporter.manifest_paths
  with open(path) as f:
    manifest = json.load(f)
  artifacts = manifest["artifacts"]
  assert artifacts["frozen"]["status"] == "ok", artifacts["frozen"]
  assert [t["tensor"].rsplit("/", 1)[-1] for t in manifest["split"]["cut"]] == ["SparseToDense:0"]
  assert manifest["split"]["front_inputs"] == ["color"] and manifest["split"]["back_inputs"] == ["x"]
  assert {"LookupTableFindV2", "SparseToDense"} <= set(manifest["split"]["runs_in_tf"])
  assert artifacts["onnx_fp32"]["status"] == "ok", artifacts["onnx_fp32"]
  assert artifacts["onnx_fp32"]["outputs_left_out"] == {
      name: "string output: ONNX variants carry numeric tensors only" for name in ("all_classes", "classes")}


def test_one_hot_of_an_out_of_vocabulary_id_stays_all_off_in_onnx(tmp_path):
  """TF's OneHot gives zeros for -1 (a feature column's unknown id); ONNX's would pick the last class."""
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx.format import FORMAT  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx.runner import OnnxRuntimeRunner  # pylint: disable=g-import-not-at-top

  class OneHot(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
    def serve(self, ids):
      return {"encoded": tf.one_hot(ids, 3) * 2.0 + 1.0}

  module = OneHot()
  tf.saved_model.save(module, str(tmp_path / "native"), signatures={"serving_default": module.serve})
  job = onnx_models.build_job(str(tmp_path / "native"), tmp_path)
  directory, _ = onnx_models.build_variant(FORMAT, job, "FP32", tmp_path)
  ids = np.array([0, 2, -1, 1], np.int64)
  with OnnxRuntimeRunner(directory) as runner:
    got = runner.run({"ids": ids})["encoded"]
  np.testing.assert_array_equal(got, module.serve(tf.constant(ids))["encoded"].numpy())
  np.testing.assert_array_equal(got[2], [1.0, 1.0, 1.0])

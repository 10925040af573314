"""Models trained under Keras mixed precision get every ONNX variant, and TensorRT-RTX builds engines from them.

Under `mixed_float16` the SavedModel computes in float16 (float16 weights behind casts, float16 Conv/MatMul):
`onnx_fp32` keeps that and says so, `onnx_fp16` and `onnx_int8` are built from the float32 view of the graph,
with float32 Q/DQ scales. `mixed_bfloat16` models are converted in float32 throughout, and a bfloat16 output is
refused with the way out named. Real Keras training, SavedModels, tf2onnx, ONNX Runtime and TensorRT-RTX.
"""

import importlib.util
import json

import numpy as np
import pytest

pytestmark = pytest.mark.tf
_MISSING = [name for name in ("onnx", "onnxruntime", "tf2onnx", "onnxconverter_common")
            if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(bool(_MISSING), reason=f"ONNX packages missing: {_MISSING}")
RTX = importlib.util.find_spec("tensorrt_rtx") is not None
ONNX_VARIANTS = ("onnx_fp32", "onnx_fp16", "onnx_int8")


@pytest.fixture
def mixed_keras(primary_keras):
  """The TF line's Keras, its global policy set by the test and set back to float32 afterwards (the policy is
  process-wide: every later test in this process would otherwise build float16 layers)."""
  yield primary_keras
  primary_keras.mixed_precision.set_global_policy("float32")


def _model(keras, kind, float32_output):
  rng = np.random.default_rng(0)
  n = 512
  brightness = rng.uniform(0, 1, (n, 1))
  if kind == "cnn":
    inputs = keras.Input((16, 16, 3), name="image")
    hidden = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    hidden = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(16, 3, activation="relu")(hidden))
    x = (rng.uniform(0, 1, (n, 16 * 16 * 3)) * brightness).reshape(n, 16, 16, 3).astype("float32")
  else:
    inputs = keras.Input((20,), name="features")
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Dense(32, activation="relu")(inputs))
    x = (rng.uniform(0, 1, (n, 20)) * brightness).astype("float32")
  if float32_output:  # what Keras' mixed precision guide recommends: the softmax in float32
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probs")(keras.layers.Dense(4)(hidden))
  else:
    outputs = keras.layers.Dense(4, activation="softmax", name="probs")(hidden)
  model = keras.Model(inputs, outputs)
  model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
  y = np.minimum((x.reshape(n, -1).mean(axis=1) * 8).astype("int32"), 3)  # four brightness classes
  model.fit(x, y, epochs=2, batch_size=32, verbose=0)
  return model, x, y


def _export(keras, model, x, y, directory, formats=("onnx", "trt_rtx"), precisions=("FP32", "FP16", "INT8")):
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  callback = tftrt_keras.TrtExport(directory, formats=formats, precisions=precisions, verbose=0)
  model.fit(x, y, validation_data=(x[:256], y[:256]), epochs=1, batch_size=32, callbacks=[callback], verbose=0)
  (path,) = callback.manifest_paths
  with open(path) as f:
    return json.load(f)["artifacts"]


def _metadata(directory, artifact):
  with open(directory / artifact / "1" / "model.json") as f:
    return json.load(f)


def _qdq_scales_and_zero_points(model):
  """{Q/DQ node: (scale dtype, zero point dtype)} read from the initializers."""
  import onnx  # pylint: disable=g-import-not-at-top
  initializers = {t.name: onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in model.graph.initializer}
  return {node.name: (initializers.get(node.input[1]), initializers.get(node.input[2]))
          for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")}


def _assert_verified(entry):
  """`ok`, or `unverified` only because the agreement's bounds need more samples (a statistical limit, not us)."""
  assert entry["status"] == "ok" or (
      entry["status"] == "unverified" and "too few verification samples" in entry["reason"]), entry


@needs_onnx
@pytest.mark.slow
@pytest.mark.parametrize("kind,float32_output", [("cnn", True), ("dense", False)], ids=["cnn-float32-softmax",
                                                                                        "dense-float16-output"])
def test_mixed_float16_model_gets_every_onnx_variant_and_trt_rtx_engines(mixed_keras, tmp_path, kind, float32_output):
  import onnx  # pylint: disable=g-import-not-at-top
  keras = mixed_keras
  keras.mixed_precision.set_global_policy("mixed_float16")
  model, x, y = _model(keras, kind, float32_output)
  output_dtype = "float32" if float32_output else "float16"
  artifacts = _export(keras, model, x, y, tmp_path / "e")

  for name in ONNX_VARIANTS:
    _assert_verified(artifacts[name])
    metadata = _metadata(tmp_path / "e", name)
    assert [t["dtype"] for t in metadata["inputs"]] == ["float32"], metadata["inputs"]
    assert [t["dtype"] for t in metadata["outputs"]] == [output_dtype], metadata["outputs"]
    graph = onnx.load(str(tmp_path / "e" / name / "1" / "model.onnx")).graph
    graph_dtypes = [onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
                    for v in list(graph.input) + list(graph.output)]
    assert graph_dtypes == ["float32", output_dtype], (name, graph_dtypes)

  # onnx_fp32 computes as trained and says so, from the graph; it is judged at FP16's tolerance, and passes.
  fp32 = artifacts["onnx_fp32"]
  assert fp32["status"] == "ok" and fp32["computes_in"] == "float16", fp32
  assert "computes in float16" in fp32["mixed_precision"], fp32
  found = _metadata(tmp_path / "e", "onnx_fp32")["mixed_precision"]
  assert found["compute_nodes"].get("Conv" if kind == "cnn" else "MatMul") == 2 + (kind == "dense"), found
  assert found["casts"] >= 1 and found["weights"] >= 4, found
  assert fp32["verification"]["thresholds"]["tolerance_of"].startswith("FP16"), fp32["verification"]
  assert fp32["verification"]["outputs"]["probs"]["max_relative_error"] < 0.005, fp32["verification"]

  assert "float32 view" in _metadata(tmp_path / "e", "onnx_fp16")["fp16"]["converted_from"]
  int8_metadata = _metadata(tmp_path / "e", "onnx_int8")["int8"]
  assert "float32 view" in int8_metadata["quantized_from"], int8_metadata
  scales = _qdq_scales_and_zero_points(onnx.load(str(tmp_path / "e" / "onnx_int8" / "1" / "model.onnx")))
  assert scales and set(scales.values()) == {("float32", "int8")}, scales
  # Only the FP32 variant computes below its name; FP16 and INT8 are what they say.
  for name in ("onnx_fp16", "onnx_int8"):
    assert "computes_in" not in artifacts[name], artifacts[name]

  if RTX:  # the real TensorRT-RTX builder parses and builds every precision from these ONNX files
    for precision in ("fp32", "fp16", "int8"):
      entry = artifacts[f"trt_rtx_{precision}"]
      assert entry["status"] in ("ok", "unverified") and entry["built_from"] == f"onnx_{precision}", entry
      assert entry["engine_bytes"] > 0, entry


@needs_onnx
@pytest.mark.slow
def test_mixed_bfloat16_model_computes_its_onnx_variants_from_the_float32_view(mixed_keras, tmp_path):
  """tf2onnx cannot write bfloat16 consistently (float16 casts beside bfloat16 weights with onnx 1.23, a refused
  constant with onnx 1.18): the frozen graph is converted in float32, every variant is built, and onnx_fp32 says
  it computes in float32, judged at FP16's tolerance (the normal export rounds in bfloat16)."""
  import onnx  # pylint: disable=g-import-not-at-top
  keras = mixed_keras
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  model, x, y = _model(keras, "dense", float32_output=True)
  artifacts = _export(keras, model, x, y, tmp_path / "e", formats=("onnx",))
  for name in ONNX_VARIANTS:
    _assert_verified(artifacts[name])
  fp32 = artifacts["onnx_fp32"]
  assert fp32["computes_in"] == "float32" and "trained in bfloat16" in fp32["mixed_precision"], fp32
  graph = onnx.load(str(tmp_path / "e" / "onnx_fp32" / "1" / "model.onnx")).graph
  low = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
  assert not [t.name for t in graph.initializer if t.data_type in low]
  assert fp32["verification"]["thresholds"]["tolerance_of"].startswith("FP16"), fp32["verification"]
  scales = _qdq_scales_and_zero_points(onnx.load(str(tmp_path / "e" / "onnx_int8" / "1" / "model.onnx")))
  assert scales and set(scales.values()) == {("float32", "int8")}, scales


@needs_onnx
def test_bfloat16_output_is_refused_naming_the_float32_output_layer(mixed_keras, tmp_path):
  """Without a float32 output layer a mixed_bfloat16 model's signature output is bfloat16, which tf2onnx writes
  as float16: onnx_fp32 fails before converting, and says how to end the model."""
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.base import VariantFailed  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx.format import FORMAT  # pylint: disable=g-import-not-at-top
  keras = mixed_keras
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  inputs = keras.Input((6,), name="features")
  model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probs")(inputs))
  job = onnx_models.build_job(onnx_models.save_keras_model(model, tmp_path / "native"), tmp_path)
  assert [t["dtype"] for t in job.signature["outputs"]] == ["bfloat16"], job.signature
  with pytest.raises(VariantFailed, match=r"output `probs` is bfloat16 .*dtype='float32'"):
    onnx_models.build_variant(FORMAT, job, "FP32", tmp_path)


# --- the float32 view, on graphs written by hand -------------------------------------------------------------------

def _float16_graph(float16_io):
  """y = relu(x @ w) computed in float16, as tf2onnx writes a mixed_float16 Dense; x and y float16 or float32."""
  import onnx  # pylint: disable=g-import-not-at-top
  from onnx import TensorProto, helper, numpy_helper  # pylint: disable=g-import-not-at-top
  io_type = TensorProto.FLOAT16 if float16_io else TensorProto.FLOAT
  weight = np.arange(12, dtype=np.float16).reshape(4, 3) / 8
  nodes = [helper.make_node("Cast", ["x"], ["x16"], name="cast_in", to=TensorProto.FLOAT16),
           helper.make_node("MatMul", ["x16", "w"], ["mm"], name="matmul"),
           helper.make_node("Relu", ["mm"], ["r"], name="relu"),
           helper.make_node("Cast", ["r"], ["y"], name="cast_out", to=io_type)]
  graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", io_type, [None, 4])],
                            [helper.make_tensor_value_info("y", io_type, [None, 3])],
                            [numpy_helper.from_array(weight, "w")])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  model.ir_version = 8
  onnx.checker.check_model(model)
  return model, weight


def _run(model, x):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
  return session.run(None, {"x": x})[0]


@needs_onnx
@pytest.mark.parametrize("float16_io", [False, True], ids=["float32-io", "float16-io"])
def test_float32_view_computes_in_float32_and_keeps_the_graph_io(float16_io):
  import onnx  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import fp16, mixed  # pylint: disable=g-import-not-at-top
  model, weight = _float16_graph(float16_io)
  compute = mixed.low_precision_compute(model)
  assert compute == {"dtype": "float16", "casts": 1, "weights": 1, "compute_nodes": {"MatMul": 1}}, compute
  view = mixed.float32_view(model)
  onnx.checker.check_model(view, full_check=True)
  assert mixed.low_precision_compute(view) is None
  assert fp16.graph_io_dtypes(view) == fp16.graph_io_dtypes(model)
  x = np.random.default_rng(0).uniform(-1, 1, (5, 4)).astype(np.float16 if float16_io else np.float32)
  expected = np.maximum(x.astype(np.float32) @ weight.astype(np.float32), 0)
  np.testing.assert_allclose(_run(view, x).astype(np.float32), expected.astype(x.dtype).astype(np.float32), rtol=1e-6)
  # The FP16 converter takes the view (with float16 graph inputs/outputs too) and keeps its inputs/outputs.
  converted, _ = fp16.convert_to_fp16(view, keep_nodes=mixed.edge_casts(view), check_fp16_ready=False)
  assert fp16.graph_io_dtypes(converted) == fp16.graph_io_dtypes(model)
  np.testing.assert_allclose(_run(converted, x).astype(np.float32), expected, rtol=2e-3, atol=2e-3)


@needs_onnx
def test_a_float32_graph_is_not_mixed():
  from onnx import TensorProto, helper, numpy_helper  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import mixed  # pylint: disable=g-import-not-at-top
  graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
                            [numpy_helper.from_array(np.eye(2, dtype=np.float32), "w")])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  assert mixed.low_precision_compute(model) is None and not mixed.has_low_precision(model)

"""INT8 Q/DQ quantization (tftrt_keras.formats.onnx.quantize) on small ONNX graphs built here, no TensorFlow.

The graphs are real ONNX models run by real ONNX Runtime; the TensorFlow-to-ONNX path is in test_onnx_format.py.
"""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the ONNX tests need onnx: pip install 'tftrt_keras[onnx]'")
pytest.importorskip("onnxruntime", reason="the ONNX tests need onnxruntime: pip install 'tftrt_keras[onnx]'")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402  pylint: disable=g-import-not-at-top

from tftrt_keras.formats.onnx import quantize as onnx_quantize  # noqa: E402  pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.unit

FEATURES, HIDDEN, CLASSES = 16, 32, 5


def _mlp_model(seed=0):
  """x[None,16] -> MatMul -> Add -> Relu -> MatMul -> Add -> y[None,5]; weights with per-column scales that differ
  by 100x, so per-tensor weight quantization would lose the small columns."""
  rng = np.random.default_rng(seed)
  w1 = (rng.normal(size=(FEATURES, HIDDEN)) * np.logspace(-2, 0, HIDDEN)).astype("float32")
  w2 = rng.normal(size=(HIDDEN, CLASSES)).astype("float32")
  b1, b2 = rng.normal(size=HIDDEN).astype("float32"), rng.normal(size=CLASSES).astype("float32")
  nodes = [
      helper.make_node("MatMul", ["x", "w1"], ["h0"], name="dense1"),
      helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
      helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
      helper.make_node("MatMul", ["h2", "w2"], ["h3"], name="dense2"),
      helper.make_node("Add", ["h3", "b2"], ["y"], name="bias2"),
  ]
  graph = helper.make_graph(
      nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CLASSES])],
      [numpy_helper.from_array(v, n) for n, v in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  model.ir_version = 8

  def reference(x):
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2
  return model, reference


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
  directory = tmp_path_factory.mktemp("mlp")
  model, reference = _mlp_model()
  path = str(directory / "fp32.onnx")
  onnx.save(model, path)
  rng = np.random.default_rng(1)
  samples = {"x": rng.normal(size=(256, FEATURES)).astype("float32")}
  return path, reference, samples, directory


def _run(path, x):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


@pytest.mark.parametrize("calibration", ["minmax", "percentile"])
def test_quantizes_matmul_inputs_symmetrically_per_channel(mlp, calibration):
  path, reference, samples, directory = mlp
  out = str(directory / f"int8_{calibration}.onnx")
  result = onnx_quantize.quantize_int8(path, out, samples, {"x": "float32"}, calibration=calibration,
                                       percentile=99.9)
  model = onnx.load(out)
  # The 32x5 output layer stays FP32 (a dimension below 16, as NVIDIA ModelOpt keeps it); the 16x32 one is INT8.
  assert result["quantized_ops"] == {"MatMul": 1}
  assert list(result["kept_fp32"]) == ["dense2"] and "32x5" in result["kept_fp32"]["dense2"]
  assert result["settings"]["calibration"] == calibration
  assert onnx_quantize.nonzero_zero_points(model) == []
  # Q/DQ feed only the MatMuls: no DequantizeLinear output goes anywhere else (not Add, not Relu, not a bias).
  consumers = {name: [n.op_type for n in model.graph.node if name in n.input]
               for name in (n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear")}
  assert consumers and all(ops == ["MatMul"] for ops in consumers.values()), consumers
  # Per-channel weights: one scale per output column of each weight matrix.
  constants = onnx_quantize._constants(model)  # pylint: disable=protected-access
  weight_scales = sorted(constants[n.input[1]].size for n in model.graph.node
                         if n.op_type == "DequantizeLinear" and constants.get(n.input[0]) is not None
                         and constants[n.input[0]].dtype == np.int8)
  assert weight_scales == [HIDDEN]
  x = np.random.default_rng(7).normal(size=(64, FEATURES)).astype("float32")
  expected = reference(x)
  assert np.abs(_run(out, x) - expected).max() / np.abs(expected).max() < 0.05


def test_a_model_of_small_layers_only_is_still_quantized(tmp_path):
  """ModelOpt's small-layer rule keeps heads FP32; a model that is nothing but small layers is its INT8 self."""
  from onnx import TensorProto, helper, numpy_helper  # pylint: disable=g-import-not-at-top
  w = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
  graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="tiny")], "tiny",
                            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
                            [numpy_helper.from_array(w, "w")])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  model.ir_version = 8
  path = str(tmp_path / "tiny.onnx")
  onnx.save(model, path)
  assert list(onnx_quantize.small_matmuls(model)) == ["tiny"]
  samples = {"x": np.random.default_rng(1).normal(size=(64, 4)).astype("float32")}
  result = onnx_quantize.quantize_int8(path, str(tmp_path / "int8.onnx"), samples, {"x": "float32"})
  assert result["quantized_ops"] == {"MatMul": 1} and result["kept_fp32"] == {}


def test_percentile_clips_ranges_tighter_than_minmax(mlp):
  path, _, samples, directory = mlp
  scales = {}
  for calibration in ("minmax", "percentile"):
    out = str(directory / f"scale_{calibration}.onnx")
    onnx_quantize.quantize_int8(path, out, samples, {"x": "float32"}, calibration=calibration, percentile=99.0)
    model = onnx.load(out)
    constants = onnx_quantize._constants(model)  # pylint: disable=protected-access
    graph_input_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    scales[calibration] = float(constants[graph_input_q.input[1]])
  assert scales["percentile"] < scales["minmax"]


def _qdq_model(zero_point):
  nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="quant_x"),
           helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dequant_x")]
  graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                            [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                             numpy_helper.from_array(np.array(zero_point, np.int8), "zp")])
  return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_nonzero_zero_point_is_found_and_named():
  assert onnx_quantize.nonzero_zero_points(_qdq_model(0)) == []
  assert onnx_quantize.nonzero_zero_points(_qdq_model(3)) == ["quant_x (QuantizeLinear)", "dequant_x (DequantizeLinear)"]


def test_a_model_without_quantizable_ops_fails_with_the_reason(tmp_path):
  graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  model.ir_version = 8
  onnx.save(model, str(tmp_path / "relu.onnx"))
  with pytest.raises(onnx_quantize.QuantizationError, match="no Conv/ConvTranspose/MatMul/Gemm node was quantized"):
    onnx_quantize.quantize_int8(str(tmp_path / "relu.onnx"), str(tmp_path / "out.onnx"),
                                {"x": np.ones((8, 3), np.float32)}, {"x": "float32"})

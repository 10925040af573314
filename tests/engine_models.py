"""Small ONNX models written with `onnx.helper`, for the engine builders' tests: no TensorFlow needed.

Each is written as an ONNX variant directory is (`model.onnx` + `model.json` with the signature's names, dtypes
and shapes), so `trt` and `trt_rtx` build from it exactly as they build from `onnx_<precision>`.
"""

import json
import os

import numpy as np

CHANNELS, SIDE, FILTERS = 3, 8, 4


def _save(model, directory, inputs, outputs):
  import onnx  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  onnx.save(model, os.path.join(directory, "model.onnx"))
  with open(os.path.join(directory, "model.json"), "w") as f:
    json.dump({"inputs": inputs, "outputs": outputs, "opset": 17}, f)
  return str(directory)


def _model(nodes, inputs, outputs, initializers=()):
  from onnx import helper  # pylint: disable=g-import-not-at-top
  graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  model.ir_version = 8  # what the ONNX Runtime and parsers of every TF line read
  return model


def conv_relu(directory):
  """x [N, 3, 8, 8] float32 -> y [N, 4, 8, 8] = relu(conv3x3(x) + bias): a convolution with a bias, as tf2onnx
  writes Keras' Conv2D. Returns the directory."""
  from onnx import TensorProto, helper, numpy_helper  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  weights = numpy_helper.from_array(rng.normal(size=(FILTERS, CHANNELS, 3, 3)).astype("float32"), "w")
  bias = numpy_helper.from_array(rng.normal(size=(FILTERS,)).astype("float32"), "b")
  nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
           helper.make_node("Relu", ["c"], ["y"], name="relu")]
  model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", CHANNELS, SIDE, SIDE])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", FILTERS, SIDE, SIDE])],
                 [weights, bias])
  return _save(model, directory, [{"name": "x", "dtype": "float32", "shape": [None, CHANNELS, SIDE, SIDE]}],
               [{"name": "y", "dtype": "float32", "shape": [None, FILTERS, SIDE, SIDE]}])


def determinant(directory):
  """m [N, 3, 3] -> det [N]: ONNX `Det`, which TensorRT's ONNX parser does not support (tf2onnx writes it for
  `tf.linalg.det`). Returns the directory."""
  from onnx import TensorProto, helper  # pylint: disable=g-import-not-at-top
  model = _model([helper.make_node("Det", ["m"], ["det"], name="det_node")],
                 [helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N", 3, 3])],
                 [helper.make_tensor_value_info("det", TensorProto.FLOAT, ["N"])])
  return _save(model, directory, [{"name": "m", "dtype": "float32", "shape": [None, 3, 3]}],
               [{"name": "det", "dtype": "float32", "shape": [None]}])


def conv_with_int32_bias_dequantize(directory):
  """`conv_relu` as a Q/DQ model whose bias is INT32 behind a DequantizeLinear (what ONNX Runtime's
  `quantize_static` writes by default, and what TensorRT's parsers reject). Returns the directory."""
  from onnx import TensorProto, helper, numpy_helper  # pylint: disable=g-import-not-at-top
  tensors = {"wq": np.ones((FILTERS, CHANNELS, 3, 3), "int8"), "ws": np.full(FILTERS, 0.1, "float32"),
             "wz": np.zeros(FILTERS, "int8"), "bq": np.arange(FILTERS, dtype="int32"),
             "bs": np.full(FILTERS, 0.01, "float32"), "bz": np.zeros(FILTERS, "int32"),
             "xs": np.array(0.1, "float32"), "xz": np.array(0, "int8")}
  nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
           helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
           helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
           helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["bd"], axis=0, name="bias_dequantize"),
           helper.make_node("Conv", ["xd", "wd", "bd"], ["y"], pads=[1, 1, 1, 1], name="conv")]
  model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", CHANNELS, SIDE, SIDE])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", FILTERS, SIDE, SIDE])],
                 [numpy_helper.from_array(value, name) for name, value in tensors.items()])
  return _save(model, directory, [{"name": "x", "dtype": "float32", "shape": [None, CHANNELS, SIDE, SIDE]}],
               [{"name": "y", "dtype": "float32", "shape": [None, FILTERS, SIDE, SIDE]}])


def conv_relu_profile(max_batch=8, opt=4):
  return {"x": {"min": [1, CHANNELS, SIDE, SIDE], "opt": [opt, CHANNELS, SIDE, SIDE],
                "max": [max_batch, CHANNELS, SIDE, SIDE]}}


def conv_classifier_saved_model(path, classes=5):
  """A SavedModel: image [N, 8, 8, 1] -> probabilities [N, classes] = softmax(dense(relu(conv3x3(image) + b1)) + b2),
  fixed weights; both layers have biases (what INT8 Q/DQ must leave unquantized for TensorRT). Returns the
  signature as {"inputs", "outputs"}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  module = tf.Module()
  module.kernel = tf.Variable(rng.normal(scale=0.5, size=(3, 3, 1, 8)).astype("float32"))
  module.b1 = tf.Variable(rng.normal(scale=0.1, size=(8,)).astype("float32"))
  module.dense = tf.Variable(rng.normal(scale=0.1, size=(8 * 8 * 8, classes)).astype("float32"))
  module.b2 = tf.Variable(rng.normal(scale=0.1, size=(classes,)).astype("float32"))

  @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image")])
  def serve(image):
    hidden = tf.nn.relu(tf.nn.conv2d(image, module.kernel, 1, "SAME") + module.b1)
    flat = tf.reshape(hidden, [-1, 8 * 8 * 8])
    return {"probabilities": tf.nn.softmax(tf.matmul(flat, module.dense) + module.b2)}

  module.serve = serve
  tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
  return {"inputs": [{"name": "image", "dtype": "float32", "shape": [None, 8, 8, 1]}],
          "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [None, classes]}]}


def images(n, seed=0):
  return np.random.default_rng(seed).uniform(0, 1, size=(n, 8, 8, 1)).astype("float32")


def determinant_saved_model(path):
  """A SavedModel computing `tf.linalg.det` of [N, 3, 3] matrices: tf2onnx converts it (ONNX `Det`), TensorRT's
  parser does not take it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  module = tf.Module()

  @tf.function(input_signature=[tf.TensorSpec([None, 3, 3], tf.float32, name="m")])
  def serve(m):
    return {"det": tf.linalg.det(m)}

  module.serve = serve
  tf.saved_model.save(module, str(path), signatures={"serving_default": serve})

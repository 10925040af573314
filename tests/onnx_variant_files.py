"""ONNX variant directories (model.onnx + model.json) written by the tests themselves, from a real SavedModel's
weights, in the layout `tftrt_keras.formats.onnx` writes; used by the Triton tests until the ONNX format builds
them in the export itself."""

import json
import os

import numpy as np


def classifier_variant(saved_model_dir, output_dir, opset=17):
  """Writes the ONNX twin of `tests.saved_models.classifier` (x -> logits, probabilities) into `output_dir`.

  The weights are read from the SavedModel, so the ONNX model computes what the normal export computes.
  Returns the model.json written.
  """
  import onnx  # pylint: disable=g-import-not-at-top
  from onnx import TensorProto, helper, numpy_helper  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  loaded = tf.saved_model.load(str(saved_model_dir))
  w, b = loaded.w.numpy().astype(np.float32), loaded.b.numpy().astype(np.float32)
  features, classes = w.shape
  graph = helper.make_graph(
      [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"]),
       helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)],
      "classifier",
      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
       helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
      initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
  model.ir_version = 8
  onnx.checker.check_model(model)
  os.makedirs(output_dir, exist_ok=True)
  onnx.save(model, os.path.join(output_dir, "model.onnx"))
  metadata = {"inputs": [{"name": "x", "dtype": "float32", "shape": [None, int(features)]}],
              "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, int(classes)]},
                          {"name": "probabilities", "dtype": "float32", "shape": [None, int(classes)]}],
              "opset": opset}
  with open(os.path.join(output_dir, "model.json"), "w") as f:
    json.dump(metadata, f)
  return metadata

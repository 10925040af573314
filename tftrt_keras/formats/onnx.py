"""ONNX models (`onnx_fp32`, `onnx_fp16`, `onnx_int8`). SKELETON: being written (helper A)."""

from tftrt_keras.formats.base import NATIVE, Format, artifact_name


class OnnxFormat(Format):
  name = "onnx"
  description = "ONNX model (model.onnx + model.json)"

  def source_of(self, precision):
    return NATIVE if precision == "FP32" else artifact_name("onnx", "FP32")


FORMAT = OnnxFormat()

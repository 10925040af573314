"""TensorRT engines (`trt_fp32`, `trt_fp16`, `trt_int8`). SKELETON: being written (helper B)."""

from tftrt_keras.formats.base import Format, artifact_name


class TensorRTFormat(Format):
  name = "trt"
  description = "TensorRT engine (model.plan + model.json)"

  def source_of(self, precision):
    return artifact_name("onnx", precision)


FORMAT = TensorRTFormat()

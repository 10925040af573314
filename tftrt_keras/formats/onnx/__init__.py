"""ONNX variants (`onnx_fp32/fp16/int8`): the format and its options (`format`), conversion from the SavedModel
(`convert`, tf2onnx), FP16 by type (`fp16`), INT8 by explicit Q/DQ (`quantize`), and ONNX Runtime (`runner`)."""

from tftrt_keras.formats.onnx.format import FORMAT, OnnxOptions

__all__ = ["FORMAT", "OnnxOptions"]

"""TensorRT engines built from the ONNX variants, by either edition: `trt_fp32/fp16/int8` with TensorRT (the format
and its options: `format`) and `trt_rtx_fp32/fp16/int8` with TensorRT-RTX (`rtx`). Shared by both: the only module
that imports TensorRT (`build`) and what it says (`log`), the work around a build (`variant`), optimization
profiles (`profile`), timing caches (`cache`), GPUs (`cuda_devices`) and the cuda-python runner (`cuda_runner`,
`binding`)."""

from tftrt_keras.formats.tensorrt.format import FORMAT, TensorRTOptions
from tftrt_keras.formats.tensorrt.rtx import TensorRTRTXOptions

__all__ = ["FORMAT", "TensorRTOptions", "TensorRTRTXOptions"]

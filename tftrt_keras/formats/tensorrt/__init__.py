"""TensorRT engines from the ONNX variants: `trt_*` with TensorRT (`format`) and `trt_rtx_*` with TensorRT-RTX (`rtx`).

Shared: `build` (the only TensorRT import), `log`, `variant`, `profile`, `cache`, `cuda_devices`, `cuda_runner`,
`binding`.
"""

from tftrt_keras.formats.tensorrt.format import FORMAT, TensorRTOptions
from tftrt_keras.formats.tensorrt.rtx import TensorRTRTXOptions

__all__ = ["FORMAT", "TensorRTOptions", "TensorRTRTXOptions"]

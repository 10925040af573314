"""TensorRT engines (`trt_fp32/fp16/int8`) built from the ONNX variants: the format and its options (`format`),
the only module that imports TensorRT (`build`), optimization profiles (`profile`), timing caches (`cache`),
GPUs (`cuda_devices`) and the cuda-python runner (`cuda_runner`, `binding`)."""

from tftrt_keras.formats.tensorrt.format import FORMAT, TensorRTOptions

__all__ = ["FORMAT", "TensorRTOptions"]

"""TF-TRT SavedModels (`tftrt_fp32/fp16/int8`, TensorFlow 2.15-2.17): the format (`format`), the only module
that talks to TF-TRT (`convert`), the converter interface (`backend`), whether TF-TRT can run here (`status`,
`libraries`, `gpu_memory`)."""

from tftrt_keras.formats.tftrt.format import FORMAT

__all__ = ["FORMAT"]

"""The `tftrt` format's own options (`format_options={"tftrt": {...}}`); `minimum_segment_size` and
`maximum_cached_engines` are also accepted as flat keywords and flags (see `tftrt_keras.options`)."""

import dataclasses

from tftrt_keras.checks import option, positive_int

_ARGUMENT = "format_options['tftrt']"


@dataclasses.dataclass(frozen=True)
class TfTrtOptions:
  """Options of TF-TRT's converter (`TrtGraphConverterV2`)."""

  minimum_segment_size: int = option(3, "Smallest subgraph TF-TRT replaces with a TensorRT engine.",
                                     check=positive_int(), kind="int")
  maximum_cached_engines: int = option(1, "Engines TF-TRT caches per TRT op (one per input-shape profile).",
                                       check=positive_int(), kind="int")

  def __post_init__(self):
    for field in dataclasses.fields(self):
      field.metadata["check"](f"{_ARGUMENT}.{field.name}", getattr(self, field.name))

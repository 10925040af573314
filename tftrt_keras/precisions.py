"""Precisions and the artifact names (`onnx_int8`, ...) they produce."""

from tftrt_keras.errors import invalid_argument

PRECISIONS = ("FP32", "FP16", "INT8")
# Artifacts every export has, in the order a manifest lists them.
BASE_ARTIFACTS = ("native", "frozen", "calibration")


def normalize_precisions(precisions, argument="precisions"):
  """The precisions as an upper-case tuple in canonical order, from a sequence or a comma-separated string.

  Empty is allowed (frozen graph, no variant). Raises ValueError.
  """
  try:
    items = precisions.split(",") if isinstance(precisions, str) else list(precisions)
  except TypeError:
    raise invalid_argument(argument, precisions, f"a subset of {PRECISIONS}") from None
  if not all(isinstance(p, str) for p in items):
    raise invalid_argument(argument, precisions if isinstance(precisions, str) else tuple(items),
                           f"a subset of {PRECISIONS}")
  requested = [p.strip().upper() for p in items if p.strip()]
  unknown = [p for p in requested if p not in PRECISIONS]
  if unknown:
    received = precisions if isinstance(precisions, str) else tuple(items)
    raise invalid_argument(argument, received, f"a subset of {PRECISIONS}",
                           hint=f"Unknown: {', '.join(unknown)}.")
  return tuple(p for p in PRECISIONS if p in requested)

"""The deployment formats, one folder each, and the variants a request asks for.

    tftrt   TF-TRT SavedModels (TensorFlow 2.15-2.17 only)        native -> tftrt_{fp32,fp16,int8}
    onnx    ONNX models, FP16 by type, INT8 by explicit Q/DQ      native -> onnx_fp32 -> onnx_fp16, onnx_int8
    trt     TensorRT engines (plans) built from the ONNX variants onnx_<p> -> trt_<p>
    trt_rtx TensorRT-RTX engines, built on any machine (GPU or not)  onnx_<p> -> trt_rtx_<p>

A format module is imported only when its variants are built or verified (never by `import tftrt_keras`).
Another package adds a format with an entry point in the `tftrt_keras.formats` group: name the format's name,
value the module exposing `FORMAT` (a `formats.base.Format`) or `module:attribute`.
"""

import importlib
import re

from tftrt_keras.errors import invalid_argument
from tftrt_keras.formats.base import NATIVE, artifact_name
from tftrt_keras.precisions import PRECISIONS

# Name -> package exposing FORMAT (each format is one folder: its builders, its runner, its options); order is
# manifest order. Formats of other packages follow, from their entry points.
BUILTIN_FORMATS = {
    "tftrt": "tftrt_keras.formats.tftrt",
    "onnx": "tftrt_keras.formats.onnx",
    "trt": "tftrt_keras.formats.tensorrt",
    "trt_rtx": "tftrt_keras.formats.tensorrt.rtx",
}
ENTRY_POINT_GROUP = "tftrt_keras.formats"
_FORMAT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _plugin_formats():
  """{name: "module" or "module:attribute"} of the formats other packages register, sorted by name."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    points = metadata.entry_points(group=ENTRY_POINT_GROUP)
  except TypeError:  # Python < 3.10 has no selection by group
    points = metadata.entry_points().get(ENTRY_POINT_GROUP, [])
  found = {}
  for point in sorted(points, key=lambda p: p.name):
    if point.name in BUILTIN_FORMATS or not _FORMAT_NAME.match(point.name) or point.name == AUTO:
      from absl import logging  # pylint: disable=g-import-not-at-top
      logging.warning("tftrt_keras: ignoring format entry point %r (%s): a built-in or invalid name",
                      point.name, point.value)
      continue
    found.setdefault(point.name, point.value)
  return found


AUTO = "auto"
FORMAT_MODULES = dict(BUILTIN_FORMATS, **_plugin_formats())
FORMATS = tuple(FORMAT_MODULES)
FROZEN = "frozen"  # the frozen graph: an artifact of every export, run like a variant (`open_runner`)


def load_format(name):
  """The `Format` instance called `name`."""
  module, _, attribute = FORMAT_MODULES[name].partition(":")
  return getattr(importlib.import_module(module), attribute or "FORMAT")


def normalize_formats(formats, argument="formats"):
  """"auto", or a tuple of format names in canonical order; raises ValueError naming `argument`.

  Accepts "auto", a sequence or a comma-separated string, any case; empty means no variants.
  """
  if isinstance(formats, str) and formats.strip().lower() == AUTO:
    return AUTO
  try:
    items = formats.split(",") if isinstance(formats, str) else list(formats)
  except TypeError:
    raise invalid_argument(argument, formats, f"'auto' or a subset of {FORMATS}") from None
  if not all(isinstance(f, str) for f in items):
    raise invalid_argument(argument, formats, f"'auto' or a subset of {FORMATS}")
  requested = [f.strip().lower() for f in items if f.strip()]
  unknown = [f for f in requested if f not in FORMATS]
  if unknown:
    received = formats if isinstance(formats, str) else tuple(items)
    raise invalid_argument(argument, received, f"'auto' or a subset of {FORMATS}", hint=f"Unknown: {', '.join(unknown)}.")
  return tuple(f for f in FORMATS if f in requested)


def resolve_formats(formats):
  """The formats an export builds: `formats` itself, or for "auto" those whose module says so here."""
  if formats == AUTO:
    return tuple(name for name in FORMATS if load_format(name).included_in_auto())
  return tuple(formats)


def variant_names(formats, precisions):
  """The variants an export with these formats and precisions has, sources included (`onnx_fp32` for `onnx_int8`)."""
  wanted = []

  def add(format_name, precision):
    name = artifact_name(format_name, precision)
    if name in wanted:
      return
    source = load_format(format_name).source_of(precision)
    if source != NATIVE:
      source_format, source_precision = split_variant(source)
      add(source_format, source_precision)
    wanted.append(name)

  for format_name in formats:
    for precision in precisions:
      add(format_name, precision)
  order = {name: i for i, name in enumerate(FORMATS)}
  return tuple(sorted(wanted, key=lambda n: (order[split_variant(n)[0]], PRECISIONS.index(split_variant(n)[1]))))


def split_variant(name):
  """("onnx", "INT8") for "onnx_int8"; raises ValueError for a name that is not a variant."""
  format_name, _, precision = name.rpartition("_")
  if format_name not in FORMAT_MODULES or precision.upper() not in ("FP32", "FP16", "INT8"):
    raise ValueError(f"not a variant name: {name!r}")
  return format_name, precision.upper()


def is_variant(name):
  try:
    split_variant(name)
  except ValueError:
    return False
  return True


def open_runner(artifact, path, job, load=load_format):
  """A `Runner` on a built artifact ("frozen" or a variant name) in its version directory `path`.

  `load` (format name -> `Format`) is injectable.
  """
  if artifact == FROZEN:
    from tftrt_keras.formats.frozen import FrozenGraphRunner  # pylint: disable=g-import-not-at-top
    return FrozenGraphRunner(path)
  return load(split_variant(artifact)[0]).open_runner(path, job)

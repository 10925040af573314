"""What every deployment format implements, and the plain values the pipeline hands it.

A *variant* is a (format, precision) pair: `onnx_int8` is format `onnx` at precision INT8. Each format is one
module exposing `FORMAT`, a `Format` instance: the pipeline asks it for each precision's source (`source_of`),
whether it can run here (`unavailable_reason`), to `build` each variant, and for a `Runner` on the result
(`open_runner`). Nothing else knows a format's files or tools, so a new format is one module plus one line in
`tftrt_keras.formats.BUILTIN_FORMATS` (or an entry point). Modelled on Polygraphy's backends and runners.
"""

import dataclasses

from tftrt_keras.errors import invalid_argument

NATIVE = "native"  # the normal export: the source of every chain of variants
METADATA_FILE = "model.json"  # beside every ONNX and engine variant's model: its inputs/outputs and how it was built
# Set by the conversion worker for its own process (`ConversionOptions.worker_threads`): every thread pool a
# format opens (ONNX Runtime sessions, the TensorRT builder) takes this bound. Unset: each library's default.
THREADS_VARIABLE = "TFTRT_KERAS_WORKER_THREADS"


def artifact_name(format_name, precision):
  """`onnx_int8` for ("onnx", "INT8")."""
  return f"{format_name}_{precision.lower()}"


def tensorflow_version():
  """The installed TensorFlow's version string, without importing TensorFlow when it is not loaded yet."""
  import sys  # pylint: disable=g-import-not-at-top
  if "tensorflow" in sys.modules and hasattr(sys.modules["tensorflow"], "__version__"):
    return sys.modules["tensorflow"].__version__
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  for dist in ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-gpu"):
    try:
      return metadata.version(dist)
    except metadata.PackageNotFoundError:
      continue
  return None


def thread_limit():
  """The worker's thread bound for a library's pool (a positive int), or None where nothing bounds it."""
  import os  # pylint: disable=g-import-not-at-top
  value = os.environ.get(THREADS_VARIABLE, "")
  return int(value) if value.isdigit() and int(value) > 0 else None


class VariantUnavailable(Exception):
  """This variant cannot be built on this machine (a missing package, no TensorRT, no GPU): recorded as
  `skipped`, with the message (which says what to install or change) as the reason."""


class VariantFailed(Exception):
  """The build ran but its result is not a usable variant (e.g. TF-TRT built no engine): recorded as `failed`
  with the message as the reason. Any other exception from `build` is recorded as `failed` too."""


class RunnerUnavailable(Exception):
  """The variant was built and build-checked, but nothing here can run it (e.g. no GPU of a compute capability
  its engines target): verification records it `unverified`, with the message (which says what can run it) as
  the reason. Raised by `Format.open_runner`."""


class Unservable(Exception):
  """Triton cannot serve this variant as it is: the message is the reason recorded in the manifest."""


# Signature dtype -> Triton DataType (common/protobuf/model_config.proto).
TRITON_DTYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
    "string": "TYPE_STRING", "bfloat16": "TYPE_BF16",
}


@dataclasses.dataclass(frozen=True)
class TritonServing:
  """What Triton needs to serve a format's variants.

  Attributes:
    platform: the Triton platform (`onnxruntime_onnx`), or None when Triton cannot serve the format.
    dtypes: the signature dtypes the model can take or give (None: every dtype Triton has).
    dtypes_note: why other dtypes cannot be served (for the reason recorded in the manifest).
    not_servable: with no platform, why Triton cannot serve the format (recorded for each usable variant).
  """

  platform: str = None
  dtypes: frozenset = None
  dtypes_note: str = ""
  not_servable: str = ""


class Runner:
  """Runs one artifact on {signature input name: array} batches and returns {signature output name: array}.

  Verification calls `prepared_call` for timing (the returned callable must wait for the result, as a
  server's response would) and `run` for outputs; `close` releases the model.
  """

  def prepared_call(self, feeds):
    raise NotImplementedError

  def run(self, feeds):
    return self.prepared_call(feeds)()

  def close(self):
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


@dataclasses.dataclass
class BuildJob:
  """Everything a format may read while building one export's variants (JSON-friendly but for the sample loader).

  Attributes:
    root: the export root (formats keep caches there, e.g. TensorRT's timing cache).
    version: the export's version.
    native_dir: the normal export (a SavedModel).
    signature_key: the serving signature all variants are built from.
    signature: {"inputs": [...], "outputs": [...]}, each {"name", "dtype", "shape"}, batch first, sorted by name.
    options: the export's `ConversionOptions`.
    calibration_batch_sizes: sizes of the captured calibration batches (empty without calibration data).
    load_calibration: callable returning {input name: array} of every calibration sample, or None.
    split: None, or {"frozen_dir", "front_dir", "plan"} for a model whose string/lookup front TensorFlow runs
      (see `formats.split_graph`); `signature` and samples are then the back's.
  """

  root: str
  version: int
  native_dir: str
  signature_key: str
  signature: dict
  options: object
  calibration_batch_sizes: list
  load_calibration: object = None
  split: dict = None

  def calibration_samples(self):
    return self.load_calibration() if self.load_calibration else None

  def format_options(self, format_name):
    """The validated options of one format (`ConversionOptions.format_options[format_name]`, with defaults)."""
    return self.options.options_for(format_name)

  @property
  def max_batch_size(self):
    """The largest batch a variant must serve: `max_batch_size`, else the largest captured batch, else 1."""
    return self.options.max_batch_size or max(self.calibration_batch_sizes or [1])


class Format:
  """One deployment format. Subclasses set `name` and `description` and implement `build` and `open_runner`.

  Attributes:
    name: artifact prefix (`onnx` -> `onnx_fp32`, ...); also the key in `formats=` and `format_options=`.
    description: what a variant directory holds, for the README and the report.
    options_class: a frozen dataclass of this format's own options (validated in its `__post_init__`,
      raising `invalid_argument` errors), or None when it has none.
  """

  name = None
  description = ""
  options_class = None
  model_file = None  # the file in a variant directory that holds the model (None: a SavedModel directory)
  serving = None  # a `TritonServing`, or None when the format is not meant for Triton at all

  def included_in_auto(self):
    """Whether `formats="auto"` selects this format in this environment (cheap; no heavy import)."""
    return True

  def source_of(self, precision):
    """The artifact the variant at `precision` is built from: `native` or another variant's name."""
    del precision
    return NATIVE

  def triton_batching(self, metadata, input_names, max_batch_size, batch_sizes):
    """How Triton batches one variant; raises Unservable. This default serves the export's max batch size.

    Args:
      metadata: the variant's `model.json`.
      input_names: its input names.
      max_batch_size: the largest batch the export serves (`BuildJob.max_batch_size`).
      batch_sizes: the captured batch sizes; the largest of them is preferred.

    Returns:
      {"max_batch_size", "preferred_batch_sizes", "cc_model_filenames", "default_model_filename", "notes"}.
    """
    del metadata, input_names
    if not max_batch_size or max_batch_size < 1:
      raise Unservable(f"no max batch size for a {self.name} variant (got {max_batch_size!r})")
    captured = [int(b) for b in batch_sizes if 0 < int(b) <= int(max_batch_size)]
    return {"max_batch_size": int(max_batch_size), "preferred_batch_sizes": [max(captured)] if captured else [],
            "cc_model_filenames": {}, "default_model_filename": None, "notes": []}

  def unavailable_reason(self, options):
    """None when this format can build here with `options` (`ConversionOptions`); else one line saying why
    not and what to install or change. Called once per export, before any of its variants is built."""
    del options
    return None

  def prepare_worker(self, options, argv, module):
    """Called first in a worker process (`python -m <module> argv[1:]`) that will build this format, before
    TensorFlow loads: e.g. re-executes it with a library path the converter needs. Default: nothing."""
    del options, argv, module

  def environment(self, options):
    """Versions and facts for the manifest's `environment["formats"][<format name>]`."""
    del options
    return {}

  def build(self, job, precision, source_dir, output_dir):
    """Builds the variant at `precision` from `source_dir` into the empty `output_dir`.

    Returns:
      A dict of details for the manifest entry (what was built, counts, sizes).

    Raises:
      VariantUnavailable: it cannot be built here (skipped).
      VariantFailed or any other exception: the build failed (failed).
    """
    raise NotImplementedError

  def open_runner(self, path, job):
    """A `Runner` on the variant in `path`."""
    raise NotImplementedError

  def check_options(self, values, argument):
    """Validates `values` (a dict, or an `options_class` instance) and returns the options instance."""
    if self.options_class is None:
      if values:
        raise invalid_argument(argument, values, f"nothing: format {self.name!r} has no options")
      return None
    if isinstance(values, self.options_class):
      return values
    if not isinstance(values, dict):
      raise invalid_argument(argument, values, f"a dict of {self.name!r} options")
    known = {f.name for f in dataclasses.fields(self.options_class)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise invalid_argument(argument, values, f"options among {sorted(known)}", hint=f"Unknown: {unknown}.")
    return self.options_class(**values)

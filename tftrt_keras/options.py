"""The knobs of one export: the option table every entry point derives from, sent to the worker as JSON.

`ConversionOptions`' fields are the table, each declared once with `checks.option`; tests/test_options_table.py
proves each reaches every entry point it names.
"""

import dataclasses
import inspect
import os

from tftrt_keras import checks
from tftrt_keras.checks import ENTRY_POINTS, KERAS, OFFLINE, TRAINING, option
from tftrt_keras.errors import invalid_argument
from tftrt_keras.formats import AUTO, FORMATS, load_format, normalize_formats, resolve_formats, variant_names
from tftrt_keras.formats.tftrt.backend import DEFAULT_BACKEND
from tftrt_keras.formats.tftrt.options import TfTrtOptions
from tftrt_keras.precisions import BASE_ARTIFACTS, PRECISIONS, normalize_precisions

DEFAULT_WORKSPACE_BYTES = 1 << 30
# A TensorRT build that hangs must not hold `fit()` at its end forever; an hour covers large models on slow GPUs.
DEFAULT_TIMEOUT_SECONDS = 3600.0
CONVERSION_POLICIES = ("latest", "every")
# Training settings shared by `TrtExport`, `TrtExporter` and the training flags (not conversion options).
DEFAULT_CALIBRATION_BATCHES = 16
DEFAULT_EXPORTS_TO_KEEP = 5
# `worker_threads` / `worker_nice`: "auto" is polite beside training, everything the machine has in the foreground.
AUTO_WORKER = "auto"
ALL_THREADS = "all"
LOWEST_PRIORITY = 19  # the largest niceness Linux gives: the scheduler runs the worker on time training leaves
# FP16's error on a classifier's outputs, relative to their largest value: twice the worst of five briefly trained
# keras.applications CNNs (0.038, EfficientNetB0), under every conversion broken on purpose there (0.09-1.0);
# benchmarks/README.md, "bench_fp16_tolerance.py".
DEFAULT_FP16_CLASSIFIER_TOLERANCE = 8e-2
# Format options also accepted flat (the seed's TF-TRT keywords and flags): {format: its options class}.
FLAT_FORMAT_OPTIONS = {"tftrt": TfTrtOptions}
_TOLERANCE = "a non-negative number (error relative to the output's scale)"


def _precisions(name, value):
  return normalize_precisions(value, name)


def _formats(name, value):
  return normalize_formats(value, name)


def _format_options(name, values):
  """{format: dict} with each format's options validated by that format (stored as plain dicts: JSON)."""
  if values is None:
    return {}
  if not isinstance(values, dict):
    raise invalid_argument(name, values, f"a dict {{format name: dict of options}}, formats {FORMATS}")
  checked = {}
  for format_name, given in values.items():
    if format_name not in FORMATS:
      raise invalid_argument(name, values, f"keys among {FORMATS}", hint=f"Unknown format: {format_name!r}.")
    instance = load_format(format_name).check_options(given, argument=f"{name}[{format_name!r}]")
    checked[format_name] = dataclasses.asdict(instance) if instance is not None else {}
  return checked


def _metric_drops(name, value):
  expected = "a dict {metric name: allowed drop >= 0}, e.g. {'accuracy': 0.005}"
  if value is None:
    return {}
  if not isinstance(value, dict):
    raise invalid_argument(name, value, expected)
  for metric, drop in value.items():
    if not isinstance(metric, str) or not metric:
      raise invalid_argument(name, value, expected, hint=f"Not a metric name: {metric!r}.")
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not drop >= 0:
      raise invalid_argument(name, value, expected, hint=f"{metric!r}: {drop!r} is not a number >= 0.")
  return {metric: float(drop) for metric, drop in value.items()}


def _deprecated_backend(backend):
  """`backend=` is deprecated: the default is accepted with a DeprecationWarning, anything else refused."""
  if backend is None:
    return
  if backend != DEFAULT_BACKEND:
    raise invalid_argument("backend", backend, "nothing: the argument is removed (TF-TRT is the only converter)",
                           hint="A converter of your own is a format: register it under the `tftrt_keras.formats` "
                                "entry-point group (see `tftrt_keras.formats`).")
  import warnings  # pylint: disable=g-import-not-at-top
  warnings.warn("`backend=` is deprecated and ignored (TF-TRT is the only converter); it will be removed in the "
                "next release.", DeprecationWarning, stacklevel=4)


def _conversion_device(name, value):
  if value is None:
    return None
  device = value.strip().lower() if isinstance(value, str) else None
  if device is None or not (device == "cpu" or (device.startswith("gpu:") and device[4:].isdigit())):
    raise invalid_argument(name, value, "None, 'cpu' or 'gpu:<index>'")
  return device


def _path(name, value):
  return checks.optional_text(name, os.fspath(value) if isinstance(value, os.PathLike) else value)


def _worker_threads(name, value):
  if isinstance(value, str) and value.strip().lower() in (AUTO_WORKER, ALL_THREADS):
    return value.strip().lower()
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise invalid_argument(name, value, f"a positive integer, {ALL_THREADS!r} or {AUTO_WORKER!r}",
                           hint="The conversion worker's threads per library (TensorFlow, ONNX Runtime, BLAS).")
  return int(value)


def _worker_nice(name, value):
  if isinstance(value, str) and value.strip().lower() == AUTO_WORKER:
    return AUTO_WORKER
  if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LOWEST_PRIORITY:
    raise invalid_argument(name, value, f"an integer from 0 to {LOWEST_PRIORITY} or {AUTO_WORKER!r}",
                           hint=f"The conversion worker's CPU niceness; {LOWEST_PRIORITY} is the lowest priority.")
  return int(value)


def _tolerance(default, doc):
  return option(default, doc, check=checks.fraction(_TOLERANCE), kind="float")


# THE OPTION TABLE. To add an option (e.g. `my_fraction: float = option(0.01, "...",
# check=checks.fraction("a fraction between 0 and 1", upper=1), kind="float")`), add its field here: it becomes a
# keyword of every entry point in `where`, the flag `--export_<name>`, a line of the docstring below and a value
# the worker reads; then give it a non-default value in NON_DEFAULT of tests/test_options_table.py, which proves
# all of that. A new `kind` needs a parser in tftrt_keras.flags.FLAG_KINDS.
# Fields of a `FLAT_FORMAT_OPTIONS` class are rows too, stored in `format_options` (declared there, and as an
# InitVar here so that `ConversionOptions(minimum_segment_size=...)` keeps working).
@dataclasses.dataclass(frozen=True)
class ConversionOptions:
  """What to build and how: every option of an export, each checked on construction.

  Each entry point (`TrtExport`, `TrtExporter`, `export_saved_model`) takes these as keywords, or one
  `options=ConversionOptions(...)`; `tftrt_keras.flags` defines `--export_<name>` for each.
  """

  precisions: tuple = option(
      PRECISIONS, "Precisions to build in every format, a subset of FP32,FP16,INT8 (empty: the frozen graph and "
      "samples only).", check=_precisions, kind="precisions")
  max_batch_size: int = option(
      None, "Largest batch the engines must serve (default: the largest captured validation batch).",
      doc_offline="Largest batch the engines must serve (default: --calibration_batch_size, or 8).",
      check=checks.positive_int(allow_none=True), kind="int")
  max_workspace_size_bytes: int = option(
      DEFAULT_WORKSPACE_BYTES, "TensorRT builder workspace per engine, in bytes (TF-TRT, and trt/trt_rtx "
      "without their own workspace_mb).", check=checks.positive_int(), kind="int")
  minimum_segment_size: dataclasses.InitVar[int] = None  # TfTrtOptions: format_options["tftrt"]
  maximum_cached_engines: dataclasses.InitVar[int] = None  # TfTrtOptions: format_options["tftrt"]
  require_tensorrt: bool = option(
      False, "Fail before training starts when no requested TensorRT format (tftrt, trt, trt_rtx) can build "
      "and run engines here, instead of recording them as skipped.",
      doc_offline="Fail before any work starts when no requested TensorRT format (tftrt, trt, trt_rtx) can "
      "build and run engines here, instead of recording them as skipped.", check=checks.boolean, kind="bool")
  gpu_memory_limit_mb: int = option(
      None, "Cap, in MB, on the conversion worker's GPU memory, TensorRT's included (default: grow on demand).",
      check=checks.positive_int(allow_none=True), kind="int")
  timeout_seconds: float = option(
      DEFAULT_TIMEOUT_SECONDS, "Kill a conversion worker that runs longer than this many seconds and record "
      "the export failed (None, or 0 as a flag: no limit).", check=checks.positive_seconds(allow_none=True),
      kind="seconds")
  backend: dataclasses.InitVar[object] = None  # deprecated: see `_deprecated_backend`
  formats: object = option(
      AUTO, f"Deployment formats, {AUTO} or a subset of {','.join(FORMATS)} ({AUTO}: those that can run here; "
      "the rest recorded as skipped with the reason).", check=_formats, kind="formats")
  format_options: dict = option(
      doc="Per-format options {format: {option: value}}, e.g. {\"onnx\": {\"opset\": 17}} (JSON as a flag; "
      "each format documents its own).", check=_format_options, kind="json", default_factory=dict)
  conversion_policy: str = option(
      "latest", "When exports come faster than conversions: latest converts the newest (an older waiting one is "
      "superseded), every converts each in turn.", check=checks.one_of(CONVERSION_POLICIES), kind="text",
      where=TRAINING + (OFFLINE,))
  conversion_device: str = option(
      None, "Device the conversion worker builds on: cpu or gpu:<index> (default: the first GPU, else the "
      "CPU); the worker sees only that device.", check=_conversion_device, kind="device")
  triton_repository: str = option(
      None, "Triton model repository to publish the servable ONNX and TensorRT variants into (one model per "
      "variant, versions = export versions).", check=_path, kind="text")
  triton_model_name: str = option(
      None, "Prefix of the Triton model names (<name>_onnx_fp16; default: the export directory's name).",
      check=checks.optional_text, kind="text")
  verify: bool = option(
      True, "Check every variant against the normal export on held-out samples (errors, agreement, latency) "
      "and reject those outside the thresholds; False: every variant is unverified.", check=checks.boolean,
      kind="bool")
  verify_tolerance_frozen: float = _tolerance(
      1e-4, "Largest error of the frozen graph's float outputs, relative to the output's scale.")
  verify_tolerance_fp32: float = _tolerance(
      1e-3, "Largest relative error of an FP32 variant's float outputs (TF32 matmuls round differently).")
  verify_tolerance_fp16: float = _tolerance(
      1e-2, "Largest relative error of an FP16 variant's outputs that are not classifier-like.")
  verify_tolerance_fp16_classifier: float = _tolerance(
      DEFAULT_FP16_CLASSIFIER_TOLERANCE, "Largest relative error of an FP16 variant's classifier-like outputs "
      "(top-1 agreement is judged too).")
  verify_tolerance_int8: float = _tolerance(
      1e-1, "Largest relative error of an INT8 variant's outputs that are not classifier-like.")
  verify_min_agreement: float = option(
      0.97, "Smallest fraction of samples on which a variant must agree with the normal export (top-1 class "
      "under FP16/INT8 judged on 95% Wilson bounds; exact integer, boolean and string outputs).",
      check=checks.fraction("a fraction between 0 and 1", upper=1), kind="float")
  verification_samples: int = option(
      500, "Held-out samples verification aims for (never used for calibration); fewer when fewer were "
      "captured.", doc_offline="Held-out samples verification aims for (never used for calibration); fewer "
      "when fewer were given.", check=checks.positive_int(), kind="int")
  verify_warmup_runs: int = option(
      3, "Untimed calls before latency is measured.", check=checks.non_negative_int, kind="int")
  verify_timed_runs: int = option(
      20, "Timed calls per batch size, at most (median and p99 come from these).", check=checks.positive_int(),
      kind="int")
  verify_latency_budget_seconds: float = option(
      1.0, "Once an artifact's timed calls at one batch size took this long, stop after 5 (None, or 0 as a "
      "flag: always verify_timed_runs).", check=checks.positive_seconds(allow_none=True), kind="seconds")
  worker_threads: object = option(
      AUTO_WORKER, f"Threads the conversion worker gives each library (TensorFlow, ONNX Runtime, BLAS, the "
      f"TensorRT builder): a number, {ALL_THREADS} or {AUTO_WORKER} (max(1, cores // 4) while training goes "
      f"on, every core when blocking).", doc_offline=f"Threads the conversion worker gives each library "
      f"(TensorFlow, ONNX Runtime, BLAS, the TensorRT builder): a number, {ALL_THREADS} or {AUTO_WORKER} (every "
      f"core).", check=_worker_threads, kind="threads")
  worker_nice: object = option(
      AUTO_WORKER, f"CPU niceness of the conversion worker, 0-{LOWEST_PRIORITY} ({LOWEST_PRIORITY}: lowest "
      f"priority), or {AUTO_WORKER} ({LOWEST_PRIORITY} while training goes on, unchanged when blocking).",
      doc_offline=f"CPU niceness of the conversion worker, 0-{LOWEST_PRIORITY} ({LOWEST_PRIORITY}: lowest "
      f"priority), or {AUTO_WORKER} (unchanged).", check=_worker_nice, kind="nice")

  max_metric_drop: dict = option(
      doc="{metric name: largest allowed drop} of the model's own metrics (a rise for losses and errors), e.g. "
      "{'accuracy': 0.005}: a variant whose paired 95% interval shows a larger drop is rejected, one that cannot "
      "tell is unverified (added to the agreement gate).", default_factory=dict, check=_metric_drops, kind="json")

  def __post_init__(self, minimum_segment_size, maximum_cached_engines, backend):
    _deprecated_backend(backend)
    for field in dataclasses.fields(self):
      object.__setattr__(self, field.name, field.metadata["check"](field.name, getattr(self, field.name)))
    self._fold_flat("tftrt", {"minimum_segment_size": minimum_segment_size,
                              "maximum_cached_engines": maximum_cached_engines})

  def _fold_flat(self, format_name, flat):
    """Moves flat keywords of a format's options into `format_options[format_name]`; a flat value that differs
    from both the default and what `format_options` says is a clash."""
    options_class = FLAT_FORMAT_OPTIONS[format_name]
    fields = {f.name: f for f in dataclasses.fields(options_class)}
    given = {name: fields[name].metadata["check"](name, value) for name, value in flat.items() if value is not None}
    explicit = format_name in self.format_options
    current = dict(self.format_options[format_name]) if explicit else dataclasses.asdict(options_class())
    for name, value in given.items():
      if explicit and value != current[name] and value != fields[name].default:
        raise invalid_argument(name, value, f"{current[name]!r}, the value format_options[{format_name!r}] gives",
                               hint="Set it in one place only.")
      if not explicit or value != fields[name].default:
        current[name] = value
    if explicit or current != dataclasses.asdict(options_class()):
      object.__setattr__(self, "format_options", dict(self.format_options, **{format_name: current}))

  def options_for(self, format_name):
    """The options instance of one format (its defaults where `format_options` says nothing)."""
    fmt = load_format(format_name)
    return fmt.check_options(self.format_options.get(format_name, {}), argument=f"format_options[{format_name!r}]")

  def to_json(self):
    data = dataclasses.asdict(self)
    data["precisions"] = list(self.precisions)
    data["formats"] = self.formats if self.formats == AUTO else list(self.formats)
    return data

  @classmethod
  def from_json(cls, data):
    return cls(**data)


def artifact_names(options):
  """The manifest keys an export with these `ConversionOptions` has, in order (formats resolved here)."""
  return BASE_ARTIFACTS + variant_names(resolve_formats(options.formats), options.precisions)


def _flat_property(format_name, name):
  return property(lambda self: getattr(self.options_for(format_name), name),
                  doc=f"`format_options[{format_name!r}].{name}` (also accepted as a keyword).")


for _format_name, _options_class in FLAT_FORMAT_OPTIONS.items():
  for _field in dataclasses.fields(_options_class):
    setattr(ConversionOptions, _field.name, _flat_property(_format_name, _field.name))


@dataclasses.dataclass(frozen=True)
class OptionRow:
  """One row of the option table: a `ConversionOptions` field, or a flat `format_options` field (`format`)."""

  name: str
  default: object
  doc: str
  doc_offline: str
  kind: str
  where: tuple
  flag: str
  check: object
  format: str = None


def _row(field, format_name=None):
  meta = field.metadata
  default = field.default_factory() if field.default is dataclasses.MISSING else field.default
  return OptionRow(field.name, default, meta["doc"], meta["doc_offline"], meta["kind"], meta["where"],
                   meta["flag"] or f"export_{field.name}", meta["check"], format_name)


def option_table(entry_point=None):
  """The option table in declaration order, or the rows `entry_point` (see `checks.ENTRY_POINTS`) carries."""
  rows = [_row(f) for f in dataclasses.fields(ConversionOptions)]
  for format_name, options_class in FLAT_FORMAT_OPTIONS.items():
    rows += [_row(f, format_name) for f in dataclasses.fields(options_class)]
  if entry_point is not None and entry_point not in ENTRY_POINTS:
    raise ValueError(f"unknown entry point {entry_point!r}; one of {ENTRY_POINTS}")
  return tuple(r for r in rows if entry_point is None or entry_point in r.where)


# Keywords still accepted, with a DeprecationWarning, though no longer options (see `ConversionOptions`).
DEPRECATED_KEYWORDS = frozenset({"backend"})


def options_from_keywords(entry_point, options, keywords, caller):
  """The `ConversionOptions` an entry point runs with: `options`, or one made of its option keywords.

  Args:
    entry_point: one of `checks.ENTRY_POINTS`.
    options: a `ConversionOptions` or None.
    keywords: {option name: value}.
    caller: the entry point's name, for the TypeError.

  Raises:
    TypeError: a keyword that is no option of `entry_point`.
    ValueError: `options` is no `ConversionOptions`, comes with option keywords, or a value is invalid.
  """
  known = {row.name for row in option_table(entry_point)} | DEPRECATED_KEYWORDS
  unknown = sorted(set(keywords) - known)
  if unknown:
    documented = sorted(row.name for row in option_table(entry_point) if row.doc)
    raise TypeError(f"{caller}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; its options "
                    f"are {', '.join(documented)} (see tftrt_keras.ConversionOptions)")
  if options is None:
    return ConversionOptions(**keywords)
  if not isinstance(options, ConversionOptions):
    raise invalid_argument("options", options, "None or a tftrt_keras.ConversionOptions")
  if keywords:
    raise invalid_argument("options", "ConversionOptions(...)", "either options= or option keywords, not both",
                           hint=f"Also given: {', '.join(sorted(keywords))}; put them in ConversionOptions(...).")
  return options


def with_option_keywords(entry_point):
  """Decorates a function taking `**option_keywords` so that its signature lists `entry_point`'s options."""
  def decorate(function):
    signature = inspect.signature(function)
    parameters = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    parameters += [inspect.Parameter(row.name, inspect.Parameter.KEYWORD_ONLY, default=row.default)
                   for row in option_table(entry_point)]
    function.__signature__ = signature.replace(parameters=parameters)
    return function
  return decorate


def _table_doc():
  lines = [f"    {row.name}: {row.doc} (default {row.default!r}"
           + (f"; stored in format_options[{row.format!r}])" if row.format else ")")
           for row in option_table() if row.doc]
  return "\n\nAttributes:\n" + "\n".join(lines) + "\n"


ConversionOptions.__doc__ = (ConversionOptions.__doc__ or "") + _table_doc()  # None under python -OO

"""The knobs of one export, validated once, shared by every entry point and sent to the worker as JSON."""

import dataclasses
import numbers
import os

from tftrt_keras.errors import invalid_argument
from tftrt_keras.formats.tftrt.backend import DEFAULT_BACKEND
from tftrt_keras.formats import AUTO, FORMATS, load_format, normalize_formats, resolve_formats, variant_names
from tftrt_keras.precisions import BASE_ARTIFACTS, PRECISIONS, normalize_precisions

DEFAULT_WORKSPACE_BYTES = 1 << 30
# A TensorRT build that hangs must not hold `fit()` at its end forever; an hour covers large models on slow GPUs.
DEFAULT_TIMEOUT_SECONDS = 3600.0
CONVERSION_POLICIES = ("latest", "every")
# `worker_threads` / `worker_nice`: "auto" is polite beside training, everything the machine has in the foreground.
AUTO_WORKER = "auto"
ALL_THREADS = "all"
LOWEST_PRIORITY = 19  # the largest niceness Linux gives: the scheduler runs the worker on time training leaves
# FP16's error on a classifier's outputs, relative to their largest value: twice the worst of five briefly trained
# keras.applications CNNs (0.038, EfficientNetB0), under every conversion broken on purpose there (0.09-1.0);
# benchmarks/README.md, "bench_fp16_tolerance.py".
DEFAULT_FP16_CLASSIFIER_TOLERANCE = 8e-2


def _check_positive_int(name, value, *, allow_none):
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
    expected = "a positive integer" + (" or None" if allow_none else "")
    raise invalid_argument(name, value, expected)


def _check_positive_number(name, value, *, allow_none):
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
    expected = "a positive number (seconds)" + (" or None" if allow_none else "")
    raise invalid_argument(name, value, expected)


def _check_fraction(name, value, expected, *, upper):
  if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0
      or (upper is not None and not value <= upper)):
    raise invalid_argument(name, value, expected)


def _checked_metric_drops(value):
  expected = "a dict {metric name: allowed drop >= 0}, e.g. {'accuracy': 0.005}"
  if value is None:
    return {}
  if not isinstance(value, dict):
    raise invalid_argument("max_metric_drop", value, expected)
  for name, drop in value.items():
    if not isinstance(name, str) or not name:
      raise invalid_argument("max_metric_drop", value, expected, hint=f"Not a metric name: {name!r}.")
    if isinstance(drop, bool) or not isinstance(drop, numbers.Real) or not drop >= 0:
      raise invalid_argument("max_metric_drop", value, expected, hint=f"{name!r}: {drop!r} is not a number >= 0.")
  return {name: float(drop) for name, drop in value.items()}


@dataclasses.dataclass(frozen=True)
class ConversionOptions:
  """What to build and how; every field is checked in `__post_init__`.

  Attributes:
    precisions: subset of ("FP32", "FP16", "INT8"); one variant per format each.
    formats: "auto" or a subset of ("tftrt", "onnx", "trt", "trt_rtx") (see `tftrt_keras.formats`). "auto":
      `tftrt` where the installed TensorFlow has TF-TRT, `onnx` always, `trt` and `trt_rtx` always (skipped with
      the reason where TensorRT or a GPU is missing, or TensorRT-RTX is not installed). A variant's source is
      built too (`onnx_fp32` for `onnx_int8`).
    format_options: {format name: dict of that format's options} (each format validates its own).
    max_batch_size: largest batch the engines must serve. TF2 has no static batch size: it becomes the
      upper end of the dynamic-shape profile the engines are prebuilt for. None: the largest captured batch.
    max_workspace_size_bytes: TensorRT builder workspace per engine.
    minimum_segment_size: smallest subgraph TF-TRT replaces with an engine.
    maximum_cached_engines: engines kept per TRT op (one per input-shape profile).
    require_tensorrt: fail before any work when no requested TensorRT format (tftrt, trt, trt_rtx) can build
      and run engines here, instead of recording skipped variants.
    gpu_memory_limit_mb: a cap on the worker's GPU memory, TensorRT's included: the worker's GPU becomes a
      logical device with this memory limit. TF-TRT gets TensorRT's memory from TensorFlow's own GPU allocator
      (its TRTDeviceAllocator wraps the device allocator: tf2tensorrt/utils/trt_lru_cache.cc, and the builder,
      calibration and execution contexts use it, convert_nodes.cc and trt_engine_op.cc), so the builder
      workspace (`max_workspace_size_bytes`), the engines and TensorFlow's own tensors all come out of this one
      limit; nothing is left outside it "for TensorRT" (TF 1.x's per_process_gpu_memory_fraction advice does
      not apply to TF2's TF-TRT). Set it to keep the worker beside a trainer on the same GPU; it must exceed
      the workspace. None: TensorFlow's memory grows on demand (memory growth), up to what the GPU has free.
    timeout_seconds: a worker still running after this long is killed and its export recorded as failed
      (default one hour; None waits for ever). Time it spent waiting for a CPU (its low priority beside busy
      training: `worker_nice`) does not count.
    conversion_policy: when exports come faster than conversions: "latest" converts the newest export and
      lets a waiting older one be superseded (its frozen graph, samples and verification are still made);
      "every" converts every export in turn (the queue grows; training is never blocked either way).
    backend: deprecated and ignored; only its default value is accepted (with a DeprecationWarning).
    conversion_device: where the worker builds: None (the first GPU, or the CPU where there is none), "cpu",
      or "gpu:<index>" (e.g. "gpu:1", to keep conversion off the GPU a trainer has filled). The worker sees
      only that device (CUDA_VISIBLE_DEVICES).
    triton_repository: a Triton model repository to publish the ONNX and TensorRT variants into (one Triton
      model per variant, versions = export versions; see `tftrt_keras.serving.triton`). None: no repository.
    triton_model_name: the name Triton models start with (`<name>_onnx_fp16`); default: the export root's
      directory name.
    verify: run every produced artifact on the held-out verification samples, compare it with the normal
      export and time it (see `tftrt_keras.verify.verification`); an artifact outside its thresholds is `rejected`.
      False: every variant is recorded `unverified` ("verification turned off (verify=False)").
    verify_tolerance_frozen, verify_tolerance_fp32, verify_tolerance_fp16, verify_tolerance_int8: the largest
      allowed error of a float output, relative to the output's scale: max |artifact - normal| / max |normal|.
      FP32 allows 1e-3 because TensorRT and TensorFlow both use TF32 matmuls on Ampere and newer GPUs, and their
      kernels round differently. The frozen graph runs in TensorFlow itself, but grappler folds its constants
      (BatchNormalization into the convolution before it, scales into weights), which reorders FP32 arithmetic:
      measured 2e-6 to 9e-6 on ResNet50, MobileNetV2/V3, ConvNeXt and 3.0e-5 on EfficientNetB0
      (benchmarks/bench_zoo.py), hence 1e-4, still ten times tighter than a converted FP32 variant. FP16 and
      INT8 use theirs only for outputs that are not classifier-like (see `verify_min_agreement`).
    verify_tolerance_fp16_classifier: the largest allowed relative error of a classifier-like output under FP16,
      where the top-1 agreement is judged too: what FP16 arithmetic gives on deep depthwise/SE networks
      (measured by benchmarks/bench_fp16_tolerance.py, see its README), with margin, yet far below what a
      broken conversion gives (an overflowing softmax, a lost layer).
    verify_min_agreement: smallest fraction of samples on which an artifact must agree with the normal export:
      on the top-1 class of classifier-like outputs (rank-2 float, more than one column) under INT8 and FP16,
      and on the exact value of integer, boolean and string outputs under every precision. Under INT8 and FP16
      (which are expected to change a few answers) judged on the one-sided 95% Wilson bounds of the observed
      agreement: `ok` when the lower bound reaches it, `rejected` when the upper bound is below it, `unverified`
      (too few samples to tell) in between. 100 agreeing samples bound it at 0.973, 500 at 0.995. Elsewhere
      the observed agreement must reach it.
    verification_samples: held-out samples verification aims for (never used for calibration); fewer when the
      validation pass or the calibration data has fewer.
    verify_warmup_runs: untimed calls before latency is measured (after the timed first call).
    verify_timed_runs: timed calls per batch size, at most; median and p99 come from these.
    verify_latency_budget_seconds: once the timed calls of one artifact at one batch size have taken this many
      seconds in all, timing stops as soon as 5 of them are in (`verification.MIN_TIMED_RUNS`; fewer only when
      `verify_timed_runs` is lower): a big model's large batch costs seconds a call, and 20 of them per artifact
      were most of verification. Each latency row's `timed_runs` in the manifest says how many were timed.
      Default 1.0; None: always `verify_timed_runs`. What is compared and the verdicts do not depend on it.
    worker_threads: threads the conversion worker gives each library it runs (TensorFlow's intra- and inter-op
      pools, ONNX Runtime sessions, numpy's BLAS, the TensorRT builder): a positive integer, "all" (each
      library's own default: every core) or "auto" (default): max(1, cores // 4) while training goes on
      (`blocking=False`), "all" when nothing else runs (`blocking=True`, `tftrt-export`, and the exports still
      queued when `fit` ends and waits for them).
    worker_nice: the worker's CPU niceness, 0-19 (19: it runs on the time training leaves idle; its I/O
      priority follows, best-effort 7), or "auto" (default): 19 while training goes on, the caller's own in
      the foreground. Never below the caller's own (Linux lets only root raise a priority).
    max_metric_drop: {metric name: largest allowed drop} of the model's own metrics (a rise for losses and
      errors), e.g. {"accuracy": 0.005}, names as Keras logs them without `val_`. A variant whose paired 95%
      interval shows a larger drop than the normal export's is `rejected`, one whose interval shows a smaller
      one passes this gate, one whose interval straddles it is `unverified`. Added to the agreement gate.
  """

  precisions: tuple = PRECISIONS
  max_batch_size: int = None
  max_workspace_size_bytes: int = DEFAULT_WORKSPACE_BYTES
  minimum_segment_size: int = 3
  maximum_cached_engines: int = 1
  require_tensorrt: bool = False
  gpu_memory_limit_mb: int = None
  timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
  backend: dataclasses.InitVar[object] = None  # deprecated: see `_deprecated_backend`
  formats: object = AUTO
  format_options: dict = dataclasses.field(default_factory=dict)
  conversion_policy: str = "latest"
  conversion_device: str = None
  triton_repository: str = None
  triton_model_name: str = None
  verify: bool = True
  verify_tolerance_frozen: float = 1e-4
  verify_tolerance_fp32: float = 1e-3
  verify_tolerance_fp16: float = 1e-2
  verify_tolerance_fp16_classifier: float = DEFAULT_FP16_CLASSIFIER_TOLERANCE
  verify_tolerance_int8: float = 1e-1
  verify_min_agreement: float = 0.97
  verification_samples: int = 500
  verify_warmup_runs: int = 3
  verify_timed_runs: int = 20
  verify_latency_budget_seconds: float = 1.0
  worker_threads: object = AUTO_WORKER
  worker_nice: object = AUTO_WORKER
  max_metric_drop: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self, backend):
    _deprecated_backend(backend)
    object.__setattr__(self, "precisions", normalize_precisions(self.precisions))
    object.__setattr__(self, "formats", normalize_formats(self.formats))
    object.__setattr__(self, "format_options", self._checked_format_options(self.format_options))
    if self.conversion_policy not in CONVERSION_POLICIES:
      raise invalid_argument("conversion_policy", self.conversion_policy, f"one of {CONVERSION_POLICIES}")
    _check_positive_int("verification_samples", self.verification_samples, allow_none=False)
    if self.conversion_device is not None:
      device = self.conversion_device.strip().lower() if isinstance(self.conversion_device, str) else None
      if device is None or not (device == "cpu" or (device.startswith("gpu:") and device[4:].isdigit())):
        raise invalid_argument("conversion_device", self.conversion_device, "None, 'cpu' or 'gpu:<index>'")
      object.__setattr__(self, "conversion_device", device)
    if isinstance(self.triton_repository, os.PathLike):
      object.__setattr__(self, "triton_repository", os.fspath(self.triton_repository))
    for name in ("triton_repository", "triton_model_name"):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, str) or not value.strip()):
        raise invalid_argument(name, value, "a non-empty string or None")
    _check_positive_int("max_batch_size", self.max_batch_size, allow_none=True)
    _check_positive_int("max_workspace_size_bytes", self.max_workspace_size_bytes, allow_none=False)
    _check_positive_int("minimum_segment_size", self.minimum_segment_size, allow_none=False)
    _check_positive_int("maximum_cached_engines", self.maximum_cached_engines, allow_none=False)
    _check_positive_int("gpu_memory_limit_mb", self.gpu_memory_limit_mb, allow_none=True)
    _check_positive_number("timeout_seconds", self.timeout_seconds, allow_none=True)
    if not isinstance(self.require_tensorrt, bool):
      raise invalid_argument("require_tensorrt", self.require_tensorrt, "True or False")
    if not isinstance(self.verify, bool):
      raise invalid_argument("verify", self.verify, "True or False")
    for name in ("verify_tolerance_frozen", "verify_tolerance_fp32", "verify_tolerance_fp16",
                 "verify_tolerance_fp16_classifier", "verify_tolerance_int8"):
      _check_fraction(name, getattr(self, name), "a non-negative number (error relative to the output's scale)",
                      upper=None)
    _check_fraction("verify_min_agreement", self.verify_min_agreement, "a fraction between 0 and 1", upper=1)
    _check_positive_int("verify_timed_runs", self.verify_timed_runs, allow_none=False)
    _check_positive_number("verify_latency_budget_seconds", self.verify_latency_budget_seconds, allow_none=True)
    if (isinstance(self.verify_warmup_runs, bool) or not isinstance(self.verify_warmup_runs, numbers.Integral)
        or self.verify_warmup_runs < 0):
      raise invalid_argument("verify_warmup_runs", self.verify_warmup_runs, "zero or a positive integer")
    self._check_worker_limits()
    object.__setattr__(self, "max_metric_drop", _checked_metric_drops(self.max_metric_drop))

  def _check_worker_limits(self):
    threads = self.worker_threads
    if isinstance(threads, str) and threads.strip().lower() in (AUTO_WORKER, ALL_THREADS):
      object.__setattr__(self, "worker_threads", threads.strip().lower())
    elif isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads <= 0:
      raise invalid_argument("worker_threads", threads, f"a positive integer, {ALL_THREADS!r} or {AUTO_WORKER!r}",
                             hint="The conversion worker's threads per library (TensorFlow, ONNX Runtime, BLAS).")
    else:
      object.__setattr__(self, "worker_threads", int(threads))
    nice = self.worker_nice
    if isinstance(nice, str) and nice.strip().lower() == AUTO_WORKER:
      object.__setattr__(self, "worker_nice", AUTO_WORKER)
    elif (isinstance(nice, bool) or not isinstance(nice, numbers.Integral)
          or not 0 <= nice <= LOWEST_PRIORITY):
      raise invalid_argument("worker_nice", nice, f"an integer from 0 to {LOWEST_PRIORITY} or {AUTO_WORKER!r}",
                             hint=f"The conversion worker's CPU niceness; {LOWEST_PRIORITY} is the lowest priority.")
    else:
      object.__setattr__(self, "worker_nice", int(nice))

  @staticmethod
  def _checked_format_options(values):
    """{format: dict} with each format's options validated by that format (stored as plain dicts: JSON)."""
    if values is None:
      return {}
    if not isinstance(values, dict):
      raise invalid_argument("format_options", values, f"a dict {{format name: dict of options}}, formats {FORMATS}")
    checked = {}
    for name, given in values.items():
      if name not in FORMATS:
        raise invalid_argument("format_options", values, f"keys among {FORMATS}", hint=f"Unknown format: {name!r}.")
      instance = load_format(name).check_options(given, argument=f"format_options[{name!r}]")
      checked[name] = dataclasses.asdict(instance) if instance is not None else {}
    return checked

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

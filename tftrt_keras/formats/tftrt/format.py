"""TF-TRT SavedModels (`tftrt_fp32`, `tftrt_fp16`, `tftrt_int8`): TensorFlow 2.15-2.17 only.

The converter is `convert.TfTrtBackend` (replaceable in tests, see `backend`); this module decides what to build
it with (calibration and build batches) and what its result must show to count as a variant.
"""

from tftrt_keras.formats.tftrt.backend import DEFAULT_BACKEND, ConversionUnavailable, converter_spec, load_backend
from tftrt_keras.formats.base import Format, VariantFailed, VariantUnavailable, tensorflow_version
from tftrt_keras.formats.savedmodel import SavedModelRunner
from tftrt_keras.formats.tftrt.options import TfTrtOptions


# TF-TRT's last release line: TensorFlow 2.18 disabled it (its Python files remain, but no build links
# TensorRT any more), so the version is the test, not the presence of `trt_convert.py` in TensorFlow.
LAST_TFTRT_TENSORFLOW = (2, 17)


def tensorflow_has_tftrt(version=None):
  """True where the installed TensorFlow has TF-TRT (2.15-2.17 here; older lines had it too)."""
  version = version or tensorflow_version()
  try:
    major_minor = tuple(int(part) for part in version.split(".")[:2])
  except (AttributeError, ValueError):
    return False
  return major_minor <= LAST_TFTRT_TENSORFLOW


def engine_batch_sizes(captured_sizes, max_batch_size):
  """Batch sizes the engines' profile is built from: 1, each captured size up to `max_batch_size`, and
  `max_batch_size` itself. With a "Range" profile the smallest and largest bound it; every size between is then
  served by the same engine without a rebuild."""
  sizes = {1, max_batch_size} | {s for s in captured_sizes if s <= max_batch_size}
  return sorted(sizes)


def _take_cyclic(samples, start, size):
  """`size` samples from `start` on, wrapping to the beginning (every batch full, every sample used)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  total = _num_samples(samples)
  index = (np.arange(start, start + size) % total)
  return {name: value[index] for name, value in samples.items()}


def _num_samples(samples):
  return len(next(iter(samples.values()))) if samples else 0


def calibration_batches(samples, captured_sizes, max_batch_size):
  """INT8 calibration batches of one size inside the engine profile, using every sample. Pure.

  TF-TRT profiles calibration from the first batch and wants every batch in that shape, so all batches get the
  largest captured size (at most `max_batch_size`); the last is filled up with samples from the start.

  Args:
    samples: {input name: array}, all captured calibration samples along axis 0.
    captured_sizes: sizes of the batches as captured.
    max_batch_size: the largest batch the engines serve.

  Returns:
    (batches, {"samples", "batch_size", "batches", "repeated"}).
  """
  total = _num_samples(samples)
  if not total:
    return [], {"samples": 0, "batch_size": 0, "batches": 0, "repeated": 0}
  size = max(1, min(max(captured_sizes or [total]), max_batch_size, total))
  count = -(-total // size)
  batches = [_take_cyclic(samples, i * size, size) for i in range(count)]
  return batches, {"samples": total, "batch_size": size, "batches": count, "repeated": count * size - total}


def build_inputs_from_samples(samples, sizes):
  """One batch per size in `sizes`, cut from the captured samples (cyclically where there are fewer)."""
  return [_take_cyclic(samples, 0, size) for size in sizes] if _num_samples(samples) else []


_SYNTHETIC_KINDS = {"float16": "f", "float32": "f", "float64": "f", "bfloat16": "f", "int8": "i", "int16": "i",
                    "int32": "i", "int64": "i", "uint8": "i", "uint16": "i", "bool": "b"}


def synthesize_build_inputs(signature, sizes, seed=0):
  """Build inputs from the signature alone, for an export without captured samples. Pure.

  Engines are built from shapes, so FP32/FP16 engines can be prebuilt from synthetic inputs; INT8 cannot.

  Args:
    signature: `BuildJob.signature`.
    sizes: the batch sizes to build for.

  Returns:
    (batches, None), or ([], why not) for an unknown rank or non-batch dimension, or a dtype like strings.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  inputs = (signature or {}).get("inputs") or []
  if not inputs:
    return [], "the signature lists no inputs to synthesize"
  problems = []
  for tensor in inputs:
    shape = tensor.get("shape")
    if shape is None or len(shape) == 0:
      problems.append(f"input {tensor['name']!r} has {'an unknown rank' if shape is None else 'no batch dimension'}")
    elif any(d is None for d in shape[1:]):
      problems.append(f"input {tensor['name']!r} has unknown non-batch dimensions {list(shape)}")
    elif tensor.get("dtype") not in _SYNTHETIC_KINDS:
      problems.append(f"input {tensor['name']!r} is {tensor.get('dtype')}, which cannot be synthesized")
  if problems:
    return [], ("no engine could be prebuilt from the signature alone: " + "; ".join(problems) +
                " (capture calibration samples, or pass calibration_data, so engines are built for real shapes)")
  rng = np.random.default_rng(seed)
  batches = []
  for size in sizes:
    batch = {}
    for tensor in inputs:
      shape, dtype = [size] + list(tensor["shape"][1:]), tensor["dtype"]
      kind = _SYNTHETIC_KINDS[dtype]
      numpy_dtype = "float32" if dtype == "bfloat16" else dtype
      if kind == "f":
        batch[tensor["name"]] = rng.random(shape).astype(numpy_dtype)
      else:
        batch[tensor["name"]] = np.zeros(shape, dtype=numpy_dtype)
    batches.append(batch)
  return batches, None


def judge_conversion(summary, engines, build_sizes, max_batch_size, minimum_segment_size, no_build_reason=None):
  """Whether a TF-TRT conversion is a variant, and the manifest details that say what it holds. Pure.

  Args:
    summary: the backend's summary (`convert.conversion_summary` plus "trt_engine_ops_saved").
    engines: `convert.read_engine_assets` of the converted SavedModel.
    build_sizes: batch sizes the engines' profile was built from (empty when nothing was built).
    max_batch_size: the largest batch the variant must serve.
    minimum_segment_size: the option, named in the reason when no segment was found.
    no_build_reason: why engines were not prebuilt, if so.

  Returns:
    The details dict for the manifest entry.

  Raises:
    VariantFailed: no segment or no serialized engine (it would only run TensorFlow, and pass trivially).
  """
  engine_ops = summary.get("trt_engine_ops_saved")
  engine_count = len(engine_ops) if engine_ops is not None else int(summary.get("trt_engine_ops", 0))
  if engine_count == 0:
    raise VariantFailed(
        f"TF-TRT built no engine: it found no segment to convert ({summary.get('ops_in_tensorflow', 0)} ops stay "
        f"in TensorFlow; minimum_segment_size={minimum_segment_size}), so this variant would only run the native "
        "graph")
  serialized = {e["engine"]: e for e in engines if e.get("instances")}
  instances = sum(len(e["instances"]) for e in serialized.values())
  if not instances:
    why = no_build_reason or "every engine build failed or fell back to TensorFlow; see worker.log"
    raise VariantFailed(f"TF-TRT placed {engine_count} TRTEngineOp(s) but serialized no TensorRT engine in "
                        f"assets/ ({why})")
  missing = sorted(set(engine_ops) - set(serialized)) if engine_ops is not None else (
      [f"{engine_count - len(serialized)} of {engine_count}"] if len(serialized) < engine_count else [])
  warnings = []
  prebuilt = sorted(set(build_sizes)) if not missing else []
  if missing:
    warnings.append(f"TRTEngineOp(s) without a serialized engine: {', '.join(missing)}; TF-TRT builds them at the "
                    "first request (or runs their native segment)")
  for engine in engines:
    if engine.get("error"):
      warnings.append(f"{engine['file']} could not be read: {engine['error']}")
  if not prebuilt or max(prebuilt) < max_batch_size:
    largest = f"the largest prebuilt is {max(prebuilt)}" if prebuilt else "no batch size is fully prebuilt"
    warnings.append(f"no engine is prebuilt for batch size {max_batch_size} ({largest}): TF-TRT builds one at the "
                    "first such request")
  details = {
      "conversion": {k: v for k, v in summary.items() if k != "trt_engine_ops_saved"},
      "engines": [{"engine": e["engine"], "file": e["file"], "bytes": e["bytes"],
                   "input_shapes": [i["input_shapes"] for i in e.get("instances", [])]} for e in engines],
      "engines_serialized": instances,
      "engines_prebuilt_for": prebuilt,
      "profile_batch_range": [min(prebuilt), max(prebuilt)] if prebuilt else None,
  }
  if warnings:
    details["warnings"] = warnings
  return details


class TfTrtFormat(Format):
  name = "tftrt"
  description = "TF-TRT SavedModel (TensorRT engines inside TRTEngineOp nodes; serve with TF Serving + TensorRT)"
  options_class = TfTrtOptions

  def __init__(self):
    self._backends = {}

  def included_in_auto(self):
    return tensorflow_has_tftrt()

  def _backend(self, spec):
    if spec not in self._backends:
      self._backends[spec] = load_backend(spec)
    return self._backends[spec]

  def prepare_worker(self, options, argv, module):
    del options
    if converter_spec() == DEFAULT_BACKEND:
      from tftrt_keras.formats.tftrt.status import ensure_tensorrt_findable  # pylint: disable=g-import-not-at-top
      ensure_tensorrt_findable(argv, module)

  def unavailable_reason(self, options):
    del options
    spec = converter_spec()
    if spec == DEFAULT_BACKEND and not tensorflow_has_tftrt():
      # TF-TRT's own converter cannot exist here: the preflight's words, so the manifest says what
      # `python -m tftrt_keras.preflight` says. A test's stand-in converter answers for itself.
      from tftrt_keras.formats.tftrt.status import check_tftrt  # pylint: disable=g-import-not-at-top
      return check_tftrt().reason
    return self._backend(spec).unavailable_reason()

  def environment(self, options):
    import os  # pylint: disable=g-import-not-at-top
    spec = converter_spec()
    if spec == DEFAULT_BACKEND and not tensorflow_has_tftrt():
      return {}  # nothing of TF-TRT to report; `unavailable_reason` says why
    environment = dict(self._backend(spec).environment())
    # The worker's own device (see `preflight.select_conversion_device`).
    environment["conversion_device"] = getattr(options, "conversion_device", None)
    environment["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return environment

  def build(self, job, precision, source_dir, output_dir):
    from tftrt_keras.formats.tftrt import convert as trt_convert  # pylint: disable=g-import-not-at-top
    options = job.options
    samples = job.calibration_samples()
    max_batch = job.max_batch_size
    sizes = engine_batch_sizes(job.calibration_batch_sizes, max_batch)
    calibration, calibration_note, no_build_reason = [], None, None
    if samples:
      build = build_inputs_from_samples(samples, sizes)
      build_source = "captured samples"
      if precision == "INT8":
        calibration, calibration_note = calibration_batches(samples, job.calibration_batch_sizes, max_batch)
    elif precision == "INT8":
      raise VariantUnavailable("INT8 needs calibration data and this export has none (capture validation batches "
                               "or pass calibration_data)")
    else:
      build, no_build_reason = synthesize_build_inputs(job.signature, sizes)
      build_source = "synthesized from the signature (no samples were captured)" if build else None
    try:
      summary = self._backend(converter_spec()).convert(source_dir, job.signature_key, precision, options,
                                                       calibration, build, output_dir)
    except ConversionUnavailable as err:
      raise VariantUnavailable(str(err)) from err
    details = judge_conversion(summary or {}, trt_convert.read_engine_assets(output_dir),
                               [_num_samples(b) for b in build], max_batch,
                               job.format_options(self.name).minimum_segment_size,
                               no_build_reason)
    details["build_inputs"] = build_source or no_build_reason
    if calibration_note:
      details["calibration"] = calibration_note
    return details

  def open_runner(self, path, job):
    return SavedModelRunner(path, job.signature_key)


FORMAT = TfTrtFormat()

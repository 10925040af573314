"""TF-TRT SavedModels (`tftrt_fp32`, `tftrt_fp16`, `tftrt_int8`): TensorFlow 2.15-2.17 only.

The converter itself is behind `ConversionOptions.backend` (`tftrt_keras.trt_convert:TfTrtBackend`, the only
module that talks to TF-TRT); this module decides what to build it with (calibration and build batches) and
what its result must show to count as a variant.
"""

from tftrt_keras.conversion_backend import ConversionUnavailable, load_backend
from tftrt_keras.formats.base import Format, VariantUnavailable
from tftrt_keras.formats.savedmodel import SavedModelRunner


# TF-TRT's last release line: TensorFlow 2.18 disabled it (its Python files remain, but no build links
# TensorRT any more), so the version is the test, not the presence of `trt_convert.py`.
LAST_TFTRT_TENSORFLOW = (2, 17)


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


def tensorflow_has_tftrt(version=None):
  """True where the installed TensorFlow has TF-TRT (2.15-2.17 here; older lines had it too)."""
  version = version or tensorflow_version()
  try:
    major_minor = tuple(int(part) for part in version.split(".")[:2])
  except (AttributeError, ValueError):
    return False
  return major_minor <= LAST_TFTRT_TENSORFLOW


def build_batches(calibration, max_batch_size):
  """Batches whose shapes the engines are prebuilt for: batch 1, each captured size, and `max_batch_size`.

  With a "Range" dynamic-shape profile, the smallest and largest shapes bound the profile; every size in
  between is then served by the same engine without a rebuild.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  if not calibration:
    return []
  sample = calibration[0]
  sizes = {1} | {_batch_size(b) for b in calibration}
  if max_batch_size:
    sizes = {s for s in sizes if s <= max_batch_size} | {max_batch_size}
  built = []
  for size in sorted(sizes):
    reps = -(-size // _batch_size(sample))
    built.append({k: np.concatenate([v] * reps)[:size] for k, v in sample.items()})
  return built


def _batch_size(batch):
  return len(next(iter(batch.values())))


class TfTrtFormat(Format):
  name = "tftrt"
  description = "TF-TRT SavedModel (TensorRT engines inside TRTEngineOp nodes; serve with TF Serving + TensorRT)"

  def __init__(self):
    self._backends = {}

  def included_in_auto(self):
    return tensorflow_has_tftrt()

  def _backend(self, spec):
    if spec not in self._backends:
      self._backends[spec] = load_backend(spec)
    return self._backends[spec]

  def unavailable_reason(self, options):
    if not tensorflow_has_tftrt():
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      return (f"TF-TRT does not exist in TensorFlow {tf.__version__} (it ships in TensorFlow 2.15-2.17 only); "
              "use the `onnx` and `trt` formats")
    from tftrt_keras.conversion_options import DEFAULT_BACKEND  # pylint: disable=g-import-not-at-top
    return self._backend(options.backend if options else DEFAULT_BACKEND).unavailable_reason()

  def environment(self, options):
    from tftrt_keras.conversion_options import DEFAULT_BACKEND  # pylint: disable=g-import-not-at-top
    if not tensorflow_has_tftrt():
      return {}
    return self._backend(options.backend if options else DEFAULT_BACKEND).environment()

  def build(self, job, precision, source_dir, output_dir):
    from tftrt_keras import calibration_data  # pylint: disable=g-import-not-at-top
    options = job.options
    samples = job.calibration_samples()
    calibration = (calibration_data.batches(samples, max(job.calibration_batch_sizes)) if samples else [])
    if precision == "INT8" and not calibration:
      raise VariantUnavailable("INT8 needs calibration data and this export has none")
    build = build_batches(calibration, options.max_batch_size)
    try:
      self._backend(options.backend).convert(source_dir, job.signature_key, precision, options, calibration,
                                             build, output_dir)
    except ConversionUnavailable as err:
      raise VariantUnavailable(str(err)) from err
    return {"engines_prebuilt_for": sorted({_batch_size(b) for b in build})}

  def open_runner(self, path, job):
    return SavedModelRunner(path, job.signature_key)


FORMAT = TfTrtFormat()

"""tftrt_keras: TensorRT deployment as a by-product of ordinary TensorFlow training.

`import tftrt_keras` loads no TensorRT and no TF-TRT module (and not even TensorFlow): every public name is
imported on first use.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "TrtExport": "tftrt_keras.keras.callback",
    "TrtExporter": "tftrt_keras.estimator.exporter",
    "check_tftrt": "tftrt_keras.preflight",
    "TfTrtStatus": "tftrt_keras.preflight",
    "export_saved_model": "tftrt_keras.offline.export",
    "ConversionOptions": "tftrt_keras.options",
    "TensorRTUnavailableError": "tftrt_keras.errors",
    "ExportRootBusy": "tftrt_keras.artifacts.layout",
    "read_manifest": "tftrt_keras.artifacts.manifest",
}

# Old names that said "TensorRT" for what checks TF-TRT only: they still work, with a DeprecationWarning.
DEPRECATED = {"check_tensorrt": "check_tftrt", "TensorRTStatus": "TfTrtStatus"}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
  if name in DEPRECATED:
    import warnings  # pylint: disable=g-import-not-at-top
    warnings.warn(f"tftrt_keras.{name} is deprecated: use tftrt_keras.{DEPRECATED[name]} (it checks TF-TRT only; "
                  "require_tensorrt=True checks every TensorRT format)", DeprecationWarning, stacklevel=2)
    return __getattr__(DEPRECATED[name])
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'tftrt_keras' has no attribute {name!r}")


def __dir__():
  return __all__

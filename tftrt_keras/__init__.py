"""tftrt_keras: TensorRT deployment as a by-product of ordinary TensorFlow training.

`import tftrt_keras` loads no TensorRT and no TF-TRT module (and not even TensorFlow): every public name is
imported on first use.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "TrtExport": "tftrt_keras.keras.callback",
    "TrtExporter": "tftrt_keras.estimator.exporter",
    "check_tensorrt": "tftrt_keras.preflight",
    "TensorRTStatus": "tftrt_keras.preflight",
    "export_saved_model": "tftrt_keras.offline.export",
    "ConversionOptions": "tftrt_keras.options",
    "TensorRTUnavailableError": "tftrt_keras.errors",
    "ExportRootBusy": "tftrt_keras.artifacts.layout",
    "read_manifest": "tftrt_keras.artifacts.manifest",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'tftrt_keras' has no attribute {name!r}")


def __dir__():
  return __all__

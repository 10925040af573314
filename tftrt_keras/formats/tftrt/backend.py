"""The one small interface every converter implements, and how the worker finds the configured one.

A backend (`name`, `unavailable_reason()`, `environment()`, `convert(saved_model_dir, signature_key, precision,
options, calibration_batches, build_batches, output_dir)` returning a `convert.conversion_summary`-like dict)
raises `ConversionUnavailable` when it cannot run here (`skipped`) and anything else when conversion failed
(`failed`). The product's is TF-TRT's (`DEFAULT_BACKEND`); tests set a double through `CONVERTER_VARIABLE`.
The format judges its summary with the engines serialized in `output_dir/assets`: no engine is `failed`.
"""

import importlib
import os

DEFAULT_BACKEND = "tftrt_keras.formats.tftrt.convert:TfTrtBackend"
# Test hook, not an option: `module:attribute` of a stand-in converter (TF-TRT needs a GPU); read only here.
CONVERTER_VARIABLE = "TFTRT_KERAS_TEST_TFTRT_CONVERTER"


def converter_spec():
  """`module:attribute` of the converter this process uses: TF-TRT's, unless the test hook names another."""
  return os.environ.get(CONVERTER_VARIABLE) or DEFAULT_BACKEND


class ConversionUnavailable(Exception):
  """The backend cannot run here (no TensorRT, no GPU); the message is the preflight's reason."""


def load_backend(spec):
  """Instantiates `module:attribute` (e.g. `tftrt_keras.formats.tftrt.convert:TfTrtBackend`)."""
  module_name, _, attribute = spec.partition(":")
  return getattr(importlib.import_module(module_name), attribute)()

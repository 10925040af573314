"""The one small interface every converter implements, and how the worker finds the configured one.

A backend turns a SavedModel plus sample batches into a variant directory. It raises
`ConversionUnavailable` when it cannot run on this machine (recorded as `skipped`) and any other exception
when the conversion itself failed (recorded as `failed`).

    class Backend:
      name = "tftrt"                      # artifact prefix: tftrt_fp16, ...
      def unavailable_reason(self): ...   # None when it can run; else one line saying why not
      def environment(self): ...          # dict for the manifest's `environment`
      def convert(self, saved_model_dir, signature_key, precision, options,
                  calibration_batches, build_batches, output_dir): ...
                                          # returns its summary of what it built: a dict with at least
                                          # "trt_engine_ops", "segments", "ops_converted", "ops_in_tensorflow"
                                          # (see `tftrt_keras.formats.tftrt.convert.conversion_summary`)

The product's converter is TF-TRT's (`DEFAULT_BACKEND`); tests put a double in its place through
`CONVERTER_VARIABLE`. The format (`tftrt_keras.formats.tftrt.format`) judges that summary together with the engines it finds serialized in
`output_dir/assets`: a conversion that built no engine is `failed`, whatever the backend says.
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

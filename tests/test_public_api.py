"""The public API is exactly this list: internal modules move freely (issue 18), these names do not.

A user's code reaches the library through these names and nothing else; a move that breaks one of them breaks
that code, so the list is pinned here name by name, each checked to be the object it claims to be.
"""

import importlib
import inspect
import os

import pytest

import tftrt_keras

pytestmark = pytest.mark.unit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `tftrt_keras.<name>`: the facade's names, each a class or function of the kind stated.
FACADE = {
    "TrtExport": "class",
    "TrtExporter": "class",
    "export_saved_model": "function",
    "check_tftrt": "function",
    "TfTrtStatus": "class",
    "ConversionOptions": "class",
    "TensorRTUnavailableError": "class",
    "ExportRootBusy": "class",
    "read_manifest": "function",
}
# Names documented at a module path of their own (README: absl flags, per-format options).
MODULE_NAMES = {
    "tftrt_keras.flags": ("define_export_flags",),
    "tftrt_keras.formats.onnx": ("OnnxOptions",),
    "tftrt_keras.formats.tensorrt": ("TensorRTOptions",),
}


def test_the_facade_lists_exactly_the_public_names():
  assert sorted(tftrt_keras.__all__) == sorted(list(FACADE) + ["__version__"])
  assert sorted(dir(tftrt_keras)) == sorted(tftrt_keras.__all__)


def _has_estimator():
  import importlib.util  # pylint: disable=g-import-not-at-top
  return importlib.util.find_spec("tensorflow_estimator") is not None


@pytest.mark.parametrize("name, kind", sorted(FACADE.items()))
def test_each_facade_name_is_what_it_claims(name, kind):
  if name == "TrtExporter" and not _has_estimator():
    # Where TensorFlow has no Estimator the name stays public and says why it cannot be used.
    with pytest.raises(ImportError, match="Estimator is supported with TensorFlow 2.15 only"):
      getattr(tftrt_keras, name)
    return
  value = getattr(tftrt_keras, name)
  assert (inspect.isclass(value) if kind == "class" else inspect.isfunction(value)), (name, value)
  assert value.__module__.startswith("tftrt_keras."), value.__module__


def test_an_unknown_name_says_so():
  with pytest.raises(AttributeError, match="has no attribute 'TrtExports'"):
    getattr(tftrt_keras, "TrtExports")


@pytest.mark.parametrize("module, names", sorted(MODULE_NAMES.items()))
def test_documented_module_paths_hold_their_names(module, names):
  loaded = importlib.import_module(module)
  for name in names:
    assert callable(getattr(loaded, name)), (module, name)


def test_the_exporters_take_the_documented_arguments():
  """The arguments the README shows in its examples, by name; every option also as `options=`."""
  callback = inspect.signature(tftrt_keras.TrtExport).parameters
  # ModelCheckpoint's own order first (filepath, monitor, verbose, save_best_only, ..., mode, save_freq, ...).
  assert list(callback)[:7] == ["export_dir", "monitor", "verbose", "save_best_only", "mode", "save_freq",
                                "initial_value_threshold"]
  for argument in ("precisions", "formats", "exports_to_keep", "calibration_batches", "verification_samples",
                   "calibration_data", "conversion_policy", "timeout_seconds", "format_options",
                   "triton_repository", "verify_tolerance_fp16", "verify_min_agreement", "verify_timed_runs",
                   "max_batch_size", "max_workspace_size_bytes", "minimum_segment_size", "options"):
    assert argument in callback, argument
  if _has_estimator():
    exporter = inspect.signature(tftrt_keras.TrtExporter).parameters
    for argument in ("name", "serving_input_receiver_fn", "precisions", "policy", "signature_key",
                     "triton_repository", "minimum_segment_size", "options"):
      assert argument in exporter, argument
  offline = inspect.signature(tftrt_keras.export_saved_model).parameters
  for argument in ("saved_model_dir", "output_dir", "calibration_data", "options", "precisions"):
    assert argument in offline, argument


@pytest.mark.parametrize("old, new", [("check_tensorrt", "check_tftrt"), ("TensorRTStatus", "TfTrtStatus")])
def test_old_names_still_work_with_a_deprecation_warning(old, new):
  """`check_tensorrt` checked TF-TRT only (require_tensorrt=True checks every TensorRT format): renamed."""
  from tftrt_keras import preflight  # pylint: disable=g-import-not-at-top
  with pytest.warns(DeprecationWarning, match=f"{old} is deprecated: use (tftrt_keras.)?{new}"):
    assert getattr(tftrt_keras, old) is getattr(tftrt_keras, new)
  with pytest.warns(DeprecationWarning, match=f"preflight.{old} is deprecated: use {new}"):
    assert getattr(preflight, old) is getattr(tftrt_keras, new)
  assert old not in tftrt_keras.__all__


def test_trt_exporter_conversion_options_is_now_options():
  if not _has_estimator():
    pytest.skip("TrtExporter needs tf.estimator (TensorFlow 2.15)")
  from tests.test_estimator_exporter import raw_receiver_fn  # pylint: disable=g-import-not-at-top
  options = tftrt_keras.ConversionOptions(precisions=("FP16",))
  with pytest.warns(DeprecationWarning, match="TrtExporter\\(conversion_options=...\\) is deprecated"):
    assert tftrt_keras.TrtExporter("trt", raw_receiver_fn(), conversion_options=options).options is options


def test_the_console_script_points_at_the_command_line_exporter():
  setup = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
  assert '"tftrt-export=export.tftrt_export:run"' in setup
  from export import tftrt_export  # pylint: disable=g-import-not-at-top
  assert callable(tftrt_export.run)



def test_the_preflight_is_a_runnable_module():
  """`python -m tftrt_keras.preflight` (its output and exit codes: tests/test_preflight.py)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec("tftrt_keras.preflight")
  assert spec is not None
  assert 'if __name__ == "__main__":' in open(spec.origin, encoding="utf-8").read()


def test_backend_is_deprecated_and_a_stand_in_converter_is_refused(tmp_path):
  """`backend=` was an argument only tests used: its one product value still works (with a DeprecationWarning)
  for one release, any other is refused before training, saying where a converter of one's own goes now."""
  default = "tftrt_keras.formats.tftrt.convert:TfTrtBackend"
  with pytest.warns(DeprecationWarning, match="`backend=` is deprecated"):
    options = tftrt_keras.ConversionOptions(backend=default)
  assert options == tftrt_keras.ConversionOptions()
  assert "backend" not in options.to_json()
  with pytest.warns(DeprecationWarning):
    tftrt_keras.TrtExport(tmp_path / "e", backend=default)
  with pytest.raises(ValueError, match="Invalid value for argument `backend`.*entry-point group"):
    tftrt_keras.TrtExport(tmp_path / "e", backend="tests.fake_trt_backend:FakeTrtBackendForTests")

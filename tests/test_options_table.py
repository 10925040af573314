"""The option table (`ConversionOptions`' fields) is the one definition of every option: each option reaches every
entry point it names with a non-default value (Keras, Estimator, offline export, training flags, `tftrt-export`),
and no entry point has an option the table lacks."""

import dataclasses
import inspect
import json

import numpy as np
import pytest
from absl import flags

import tftrt_keras
from tests import saved_models
from tftrt_keras import flags as tftrt_flags
from tftrt_keras.checks import CLI, ENTRY_POINTS, ESTIMATOR, FLAGS, KERAS, OFFLINE
from tftrt_keras.errors import TensorRTUnavailableError
from tftrt_keras.options import ConversionOptions, option_table

# One non-default value per option. A new option of the table gets its line here, or the first test fails.
NON_DEFAULT = {
    "precisions": (), "max_batch_size": 4, "max_workspace_size_bytes": 1 << 20, "require_tensorrt": True,
    "gpu_memory_limit_mb": 512, "timeout_seconds": 300.0, "max_metric_drop": {"accuracy": 0.01}, "formats": ("onnx",),
    "format_options": {"onnx": {"opset": 15}}, "conversion_policy": "every", "conversion_device": "cpu",
    "triton_repository": "TRITON", "triton_model_name": "digits", "verify": False,
    "verify_tolerance_frozen": 2e-4, "verify_tolerance_fp32": 2e-3, "verify_tolerance_fp16": 2e-2,
    "verify_tolerance_fp16_classifier": 0.09, "verify_tolerance_int8": 0.2, "verify_min_agreement": 0.9,
    "verification_samples": 7, "verify_warmup_runs": 1, "verify_timed_runs": 4,
    "verify_latency_budget_seconds": 0.5, "worker_threads": 1, "worker_nice": 3, "minimum_segment_size": 4,
    "maximum_cached_engines": 2,
}
# Each entry point's own arguments, which are not conversion options.
OWN_ARGUMENTS = {
    KERAS: {"export_dir", "monitor", "verbose", "save_best_only", "mode", "save_freq", "initial_value_threshold",
            "calibration_batches", "calibration_data", "exports_to_keep", "blocking", "input_signature", "log_dir",
            "seed", "options"},
    ESTIMATOR: {"name", "serving_input_receiver_fn", "compare_fn", "exports_to_keep", "calibration_batches",
                "calibration_input_fn", "policy", "event_file_pattern", "blocking", "assets_extra", "as_text",
                "signature_key", "options"},
    OFFLINE: {"saved_model_dir", "output_dir", "signature_key", "calibration_data", "calibration_batch_size",
              "source", "exports_to_keep", "metrics", "options"},
    FLAGS: set(tftrt_flags.TRAINING_SETTINGS),
    CLI: {"saved_model_dir", "output_dir", "signature_key", "calibration_data", "calibration_batch_size", "json",
          "metrics", "export_exports_to_keep"},
}


def _values(entry_point, tmp_path, *, with_require=True):
  values = {row.name: NON_DEFAULT[row.name] for row in option_table(entry_point)}
  if "triton_repository" in values:
    values["triton_repository"] = str(tmp_path / "triton")
  if not with_require:
    values.pop("require_tensorrt")
  return values


def _assert_reached(options, values):
  """Each value is what the worker reads: the options after the JSON trip of the worker's request."""
  options = ConversionOptions.from_json(json.loads(json.dumps(options.to_json())))
  expected, defaults = ConversionOptions(**values), ConversionOptions()
  for name in values:
    assert getattr(options, name) == getattr(expected, name) != getattr(defaults, name), name


def _flag_args(values):
  args = []
  for name, value in values.items():
    flag = next(row.flag for row in option_table() if row.name == name)
    if isinstance(value, bool):
      args.append(f"--{'' if value else 'no'}{flag}")
    elif isinstance(value, dict):
      args.append(f"--{flag}={json.dumps(value)}")
    else:
      args.append(f"--{flag}={','.join(value) if isinstance(value, tuple) else value}")
  return args


def _signature_names(function):
  return {name for name, p in inspect.signature(function).parameters.items() if p.kind != p.VAR_KEYWORD}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  base = tmp_path_factory.mktemp("table")
  saved_models.classifier(base / "classifier", seed=3)
  np.savez(base / "x.npz", **saved_models.samples(12, seed=5))
  return base


@pytest.mark.unit
def test_every_option_of_the_table_has_a_test_value_a_doc_and_a_flag_kind():
  rows = option_table()
  assert sorted(row.name for row in rows) == sorted(NON_DEFAULT)
  assert len({row.name for row in rows}) == len(rows) and len({row.flag for row in rows}) == len(rows)
  for row in rows:
    assert set(row.where) <= set(ENTRY_POINTS) and row.where, row.name
    assert row.kind == "bool" or row.kind in tftrt_flags.FLAG_KINDS, row.name
    assert row.doc or row.name == "backend", row.name  # backend is a seam, not documented
    assert row.check(row.name, row.default) == row.default, row.name  # the default passes its own check
  # The TF-TRT knobs are TF-TRT's options, also accepted flat.
  assert {row.name: row.format for row in rows if row.format} == {"minimum_segment_size": "tftrt",
                                                                   "maximum_cached_engines": "tftrt"}


@pytest.mark.unit
@pytest.mark.parametrize("entry_point", [KERAS, OFFLINE, ESTIMATOR])
def test_python_entry_points_list_exactly_their_options_and_their_own_arguments(entry_point):
  if entry_point == ESTIMATOR:
    pytest.importorskip("tensorflow_estimator")
  function = {KERAS: lambda: tftrt_keras.TrtExport, ESTIMATOR: lambda: tftrt_keras.TrtExporter,
              OFFLINE: lambda: tftrt_keras.export_saved_model}[entry_point]()
  table = {row.name for row in option_table(entry_point)}
  assert _signature_names(function) == OWN_ARGUMENTS[entry_point] | table
  assert not OWN_ARGUMENTS[entry_point] & table


@pytest.mark.unit
def test_flags_are_exactly_the_tables_and_the_training_settings():
  training, offline = flags.FlagValues(), flags.FlagValues()
  defined = set(tftrt_flags.define_export_flags(training))
  assert defined == OWN_ARGUMENTS[FLAGS] | {row.flag for row in option_table(FLAGS)}
  from export import tftrt_export  # pylint: disable=g-import-not-at-top
  tftrt_export.define_flags(offline)
  assert set(offline) == OWN_ARGUMENTS[CLI] | {row.flag for row in option_table(CLI)}


@pytest.mark.tf
def test_every_option_reaches_trt_export_as_keyword_and_as_options(tmp_path):
  values = _values(KERAS, tmp_path)
  _assert_reached(tftrt_keras.TrtExport(tmp_path / "e", verbose=0, **values).options, values)
  options = ConversionOptions(**values)
  assert tftrt_keras.TrtExport(tmp_path / "e", options=options).options is options
  with pytest.raises(ValueError, match="Invalid value for argument `options`.*not both.*Also given: verify"):
    tftrt_keras.TrtExport(tmp_path / "e", options=options, verify=True)
  with pytest.raises(TypeError, match="TrtExport\\(\\) got unexpected keyword argument\\(s\\) 'precision'"):
    tftrt_keras.TrtExport(tmp_path / "e", precision=("FP16",))


@pytest.mark.tf
def test_every_option_reaches_the_training_flags_and_from_flags(tmp_path):
  values = _values(FLAGS, tmp_path)
  fv = flags.FlagValues()
  tftrt_flags.define_export_flags(fv)
  fv(["prog", f"--export_dir={tmp_path / 'e'}", *_flag_args(values)])
  _assert_reached(tftrt_flags.conversion_options_from_flags(fv), values)
  _assert_reached(tftrt_keras.TrtExport.from_flags(fv, verbose=0).options, values)


def _raises_or_carries(build, check):
  """`require_tensorrt=True` is checked where the entry point starts: it raises here, or (where TensorRT runs)
  it is carried."""
  try:
    result = build()
  except TensorRTUnavailableError as err:
    assert "require_tensorrt=True" in str(err)
    return
  check(result)


@pytest.mark.tf
def test_every_option_reaches_the_offline_export_worker(model, tmp_path):
  values = _values(OFFLINE, tmp_path, with_require=False)
  manifest = tftrt_keras.export_saved_model(str(model / "classifier"), str(tmp_path / "out"), **values)
  _assert_reached(ConversionOptions.from_json(manifest["options"]), values)
  _raises_or_carries(
      lambda: tftrt_keras.export_saved_model(str(model / "classifier"), str(tmp_path / "out2"), formats=("trt",),
                                             precisions=(), require_tensorrt=True),
      lambda manifest: _assert_reached(ConversionOptions.from_json(manifest["options"]), {"require_tensorrt": True}))


@pytest.mark.tf
def test_every_option_reaches_the_tftrt_export_worker(model, tmp_path):
  from export import tftrt_export  # pylint: disable=g-import-not-at-top
  values = _values(CLI, tmp_path, with_require=False)
  fv = flags.FlagValues()
  tftrt_export.define_flags(fv)
  fv(["tftrt-export", f"--saved_model_dir={model / 'classifier'}", f"--output_dir={tmp_path / 'out'}", "--json",
      *_flag_args(values)])

  class Out:
    text = ""

    def write(self, text):
      Out.text += text
  assert tftrt_export.run_from_flags(fv, out=Out()) == 0
  _assert_reached(ConversionOptions.from_json(json.loads(Out.text)["options"]), values)


@pytest.mark.tf
def test_every_option_reaches_trt_exporter_and_its_flags(tmp_path):
  pytest.importorskip("tensorflow_estimator")
  from tests.test_estimator_exporter import raw_receiver_fn  # pylint: disable=g-import-not-at-top
  values = _values(ESTIMATOR, tmp_path, with_require=False)
  _assert_reached(tftrt_keras.TrtExporter("trt", raw_receiver_fn(), **values).options, values)
  fv = flags.FlagValues()
  tftrt_flags.define_export_flags(fv)
  fv(["prog", *_flag_args(values)])
  _assert_reached(tftrt_keras.TrtExporter.from_flags(fv, "trt", raw_receiver_fn()).options, values)
  _raises_or_carries(lambda: tftrt_keras.TrtExporter("trt", raw_receiver_fn(), formats=("trt",), require_tensorrt=True),
                     lambda exporter: _assert_reached(exporter.options, {"require_tensorrt": True}))
  options = ConversionOptions(precisions=("FP16",))
  with pytest.warns(DeprecationWarning, match="conversion_options=.*options="):
    exporter = tftrt_keras.TrtExporter("trt", raw_receiver_fn(), conversion_options=options)
  assert exporter.options is options
  with pytest.raises(ValueError, match="Invalid value for argument `options`.*not both"):
    tftrt_keras.TrtExporter("trt", raw_receiver_fn(), options=options, minimum_segment_size=5)


@pytest.mark.unit
def test_tftrt_settings_live_with_tftrt_and_the_flat_spelling_is_kept():
  flat = ConversionOptions(minimum_segment_size=5, maximum_cached_engines=2)
  nested = ConversionOptions(format_options={"tftrt": {"minimum_segment_size": 5, "maximum_cached_engines": 2}})
  assert flat == nested and flat.format_options["tftrt"] == {"minimum_segment_size": 5, "maximum_cached_engines": 2}
  assert (flat.minimum_segment_size, flat.maximum_cached_engines) == (5, 2)
  from tftrt_keras.formats import load_format  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tftrt.options import TfTrtOptions  # pylint: disable=g-import-not-at-top
  assert load_format("tftrt").options_class is TfTrtOptions
  assert flat.options_for("tftrt") == TfTrtOptions(minimum_segment_size=5, maximum_cached_engines=2)
  assert ConversionOptions() == ConversionOptions(minimum_segment_size=3)  # the default is TF-TRT's own
  assert "minimum_segment_size" not in {f.name for f in dataclasses.fields(ConversionOptions)}
  assert dataclasses.replace(flat, max_batch_size=8).minimum_segment_size == 5
  with pytest.raises(ValueError, match="Invalid value for argument `minimum_segment_size`.*Set it in one place"):
    ConversionOptions(minimum_segment_size=5, format_options={"tftrt": {"minimum_segment_size": 4}})
  with pytest.raises(ValueError, match=r"`format_options\['tftrt'\].minimum_segment_size`"):
    ConversionOptions(format_options={"tftrt": {"minimum_segment_size": 0}})

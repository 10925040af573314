"""absl flags for training scripts and tftrt-export: names that cannot collide, validators that name the flag in
plain words, every ConversionOptions field from its flag, and from_flags (tier unit/tf)."""

import pytest
from absl import flags
from absl.testing import flagsaver

import tftrt_keras
from tftrt_keras import flags as tftrt_flags

# The names other modules and users rely on (issue 18).
COMMON_FLAGS = ("export_precisions", "export_max_batch_size", "export_verify", "export_exports_to_keep",
                "export_timeout_seconds", "export_formats", "export_format_options", "export_verification_samples",
                "export_conversion_device", "export_triton_repository", "export_triton_model_name",
                "export_max_workspace_size_bytes", "export_minimum_segment_size", "export_maximum_cached_engines",
                "export_require_tensorrt", "export_gpu_memory_limit_mb", "export_worker_threads",
                "export_worker_nice", "export_verify_tolerance_frozen", "export_verify_tolerance_fp32",
                "export_verify_tolerance_fp16", "export_verify_tolerance_fp16_classifier",
                "export_verify_tolerance_int8", "export_verify_min_agreement", "export_verify_warmup_runs",
                "export_verify_timed_runs", "export_verify_latency_budget_seconds", "export_max_metric_drop")
TRAINING_FLAGS = ("export_dir", "export_calibration_batches", "export_conversion_policy", "export_signature_key",
                  "export_save_best_only", "export_monitor", "export_blocking")


def _defined(argv=(), **kwargs):
  fv = flags.FlagValues()
  tftrt_flags.define_export_flags(fv, **kwargs)
  fv(["prog", *argv])
  return fv


@pytest.fixture
def global_flags():
  """absl's global FLAGS as a training script has them: its own --precisions, --max_batch_size, --verify and
  --calibration_batches, then the export flags (flagsaver works on the global FLAGS only)."""
  fv = flags.FLAGS
  if "precisions" not in fv:
    flags.DEFINE_list("precisions", ["bf16"], "The script's own training precisions.")
    flags.DEFINE_integer("max_batch_size", 4096, "The script's own largest training batch.")
    flags.DEFINE_boolean("verify", False, "The script's own check of its input pipeline.")
    flags.DEFINE_integer("calibration_batches", 3, "The script's own calibration of something else.")
  if "export_precisions" not in fv:
    tftrt_flags.define_export_flags()
  if not fv.is_parsed():
    fv.mark_as_parsed()
  return fv


@pytest.mark.unit
def test_nothing_is_defined_at_import_and_every_name_is_prefixed():
  fv = flags.FlagValues()
  assert not list(fv)
  defined = tftrt_flags.define_export_flags(fv)
  assert set(defined) == set(COMMON_FLAGS + TRAINING_FLAGS)
  assert all(name.startswith("export_") for name in defined)
  offline = tftrt_flags.define_export_flags(flags.FlagValues(), export_dir=False, training=False)
  assert set(offline) == set(COMMON_FLAGS)


@pytest.mark.unit
def test_a_script_with_flags_of_the_old_names_does_not_collide(global_flags):
  with flagsaver.flagsaver(precisions=["bf16", "fp32"], max_batch_size=512, verify=True, calibration_batches=9,
                           export_precisions=["FP16"], export_max_batch_size=16, export_verify=False,
                           export_calibration_batches=2):
    options = tftrt_flags.conversion_options_from_flags(global_flags)
    assert (options.precisions, options.max_batch_size, options.verify) == (("FP16",), 16, False)
    assert tftrt_flags.training_settings_from_flags(global_flags)["calibration_batches"] == 2
    # The script's own flags keep their values.
    assert (global_flags.precisions, global_flags.max_batch_size, global_flags.verify,
            global_flags.calibration_batches) == (["bf16", "fp32"], 512, True, 9)


@pytest.mark.unit
def test_unknown_precision_is_said_plainly():
  with pytest.raises(flags.IllegalFlagValueError) as raised:
    _defined(["--export_precisions=FP8"])
  message = str(raised.value)
  assert "--export_precisions=FP8: expected a subset of FP32,FP16,INT8" in message
  assert "[" not in message.replace("(unknown: FP8)", "")  # no Python list repr
  assert "(unknown: FP8)" in message


@pytest.mark.unit
@pytest.mark.parametrize("argv,flag,expected", [
    (["--export_max_workspace_size_bytes=0"], "--export_max_workspace_size_bytes=0", "positive integer"),
    (["--export_minimum_segment_size=-1"], "--export_minimum_segment_size=-1", "positive integer"),
    (["--export_maximum_cached_engines=0"], "--export_maximum_cached_engines=0", "positive integer"),
    (["--export_max_batch_size=0"], "--export_max_batch_size=0", "positive integer"),
    (["--export_exports_to_keep=0"], "--export_exports_to_keep=0", "positive integer"),
    (["--export_gpu_memory_limit_mb=0"], "--export_gpu_memory_limit_mb=0", "positive integer"),
    (["--export_verification_samples=0"], "--export_verification_samples=0", "positive integer"),
    (["--export_calibration_batches=-2"], "--export_calibration_batches=-2", "non-negative integer"),
    (["--export_timeout_seconds=-5"], "--export_timeout_seconds=-5", "0 to wait without limit"),
    (["--export_formats=onnx,tensorflowjs"], "--export_formats=onnx,tensorflowjs",
     "expected auto or a subset of tftrt,onnx,trt,trt_rtx (unknown: tensorflowjs)"),
    (["--export_format_options={not json"], "--export_format_options={not json", "expected a JSON object"),
    (["--export_format_options=[1, 2]"], "--export_format_options=[1, 2]", "expected a JSON object"),
    (['--export_format_options={"coreml": {}}'], "--export_format_options=", "Unknown format: 'coreml'"),
    (["--export_conversion_device=tpu:0"], "--export_conversion_device=tpu:0", "expected cpu or gpu:<index>"),
    (["--export_conversion_policy=oldest"], "--export_conversion_policy=oldest", "latest"),
    (["--export_worker_threads=0"], "--export_worker_threads=0", "expected a positive number of threads, all"),
    (["--export_worker_threads=many"], "--export_worker_threads=many", "or auto"),
    (["--export_worker_nice=20"], "--export_worker_nice=20", "expected a niceness from 0 to 19"),
    (["--export_worker_nice=-5"], "--export_worker_nice=-5", "or auto"),
    (["--export_verify_min_agreement=1.5"], "--export_verify_min_agreement=1.5", "a fraction between 0 and 1"),
    (["--export_verify_timed_runs=0"], "--export_verify_timed_runs=0", "a positive integer"),
    (["--export_verify_tolerance_fp16=-1"], "--export_verify_tolerance_fp16=-1", "a non-negative number"),
    (["--export_precisions=FP16,INT8", "--export_calibration_batches=0"], "--export_calibration_batches=0",
     "needs calibration data"),
])
def test_validators_reject_bad_values_naming_the_flag(argv, flag, expected):
  with pytest.raises(flags.IllegalFlagValueError) as raised:
    _defined(argv)
  assert flag in str(raised.value) and expected in str(raised.value), str(raised.value)


@pytest.mark.unit
def test_int8_needs_captured_batches_only_when_requested():
  fv = _defined(["--export_precisions=FP16", "--export_calibration_batches=0"])
  assert tftrt_flags.conversion_options_from_flags(fv).precisions == ("FP16",)


@pytest.mark.unit
def test_every_option_comes_from_its_flag():
  fv = _defined([
      "--export_precisions=int8,fp16", "--export_formats=onnx,tftrt", '--export_format_options={"onnx": {}}',
      "--export_max_batch_size=64", "--export_max_workspace_size_bytes=4096", "--export_minimum_segment_size=5",
      "--export_maximum_cached_engines=2", "--export_require_tensorrt", "--export_gpu_memory_limit_mb=2048",
      "--export_timeout_seconds=90.5", "--export_conversion_policy=every", "--export_conversion_device=GPU:1",
      "--export_triton_repository=/srv/triton", "--export_triton_model_name=digits", "--noexport_verify",
      "--export_verification_samples=700", "--export_worker_threads=3", "--export_worker_nice=10"])
  options = tftrt_flags.conversion_options_from_flags(fv)
  assert options.precisions == ("FP16", "INT8") and options.formats == ("tftrt", "onnx")
  onnx_defaults = tftrt_keras.ConversionOptions(format_options={"onnx": {}}).format_options["onnx"]
  assert options.format_options["onnx"] == onnx_defaults
  # TF-TRT's own settings live with TF-TRT, whatever spelling set them.
  assert options.format_options["tftrt"] == {"minimum_segment_size": 5, "maximum_cached_engines": 2}
  assert (options.max_batch_size, options.max_workspace_size_bytes, options.minimum_segment_size,
          options.maximum_cached_engines) == (64, 4096, 5, 2)
  assert options.require_tensorrt is True and options.gpu_memory_limit_mb == 2048
  assert options.timeout_seconds == 90.5 and options.conversion_policy == "every"
  assert options.conversion_device == "gpu:1"
  assert (options.triton_repository, options.triton_model_name) == ("/srv/triton", "digits")
  assert options.verify is False and options.verification_samples == 700
  assert (options.worker_threads, options.worker_nice) == (3, 10)


@pytest.mark.unit
def test_defaults_and_special_values():
  options = tftrt_flags.conversion_options_from_flags(_defined())
  assert options == tftrt_keras.ConversionOptions(precisions=("FP32", "FP16", "INT8"))
  assert options.formats == "auto" and options.timeout_seconds == 3600
  unbounded = tftrt_flags.conversion_options_from_flags(_defined(["--export_timeout_seconds=0",
                                                                  "--export_triton_repository="]))
  assert unbounded.timeout_seconds is None and unbounded.triton_repository is None
  assert tftrt_flags.conversion_options_from_flags(_defined(), verify=False).verify is False  # overrides win


@pytest.mark.unit
def test_values_set_in_code_are_checked_naming_the_flag(global_flags):
  # flagsaver sets values without the parsers (absl still runs the bound checks).
  with flagsaver.flagsaver(export_conversion_device="tpu"):
    with pytest.raises(ValueError, match="--export_conversion_device: Invalid value for argument "
                                         "`conversion_device`"):
      tftrt_flags.conversion_options_from_flags(global_flags)


@pytest.mark.unit
def test_training_settings():
  fv = _defined(["--export_dir=/tmp/x", "--export_exports_to_keep=2", "--export_calibration_batches=4",
                 "--export_save_best_only", "--export_monitor=val_accuracy", "--export_blocking",
                 "--export_signature_key=predict"])
  assert tftrt_flags.training_settings_from_flags(fv) == {
      "export_dir": "/tmp/x", "exports_to_keep": 2, "calibration_batches": 4, "save_best_only": True,
      "monitor": "val_accuracy", "blocking": True, "signature_key": "predict"}
  assert _defined().export_exports_to_keep == 5  # bounded disk by default in training
  offline = _defined(export_dir=False, training=False)
  assert tftrt_flags.training_settings_from_flags(offline) == {"exports_to_keep": None}


@pytest.mark.unit
def test_help_speaks_of_training_or_of_an_existing_saved_model():
  training = flags.FlagValues()
  tftrt_flags.define_export_flags(training)
  offline = flags.FlagValues()
  tftrt_flags.define_export_flags(offline, export_dir=False, training=False)
  training_help = " ".join(training.module_help(tftrt_flags.__name__).split())
  offline_help = " ".join(offline.module_help(tftrt_flags.__name__).split())
  assert "the largest captured validation batch" in training_help and "before training" in training_help
  for words in ("captured", "training", "validation"):
    assert words not in offline_help, words
  assert "--calibration_batch_size" in offline_help and "Fail before any work starts" in offline_help


@pytest.mark.tf
def test_trt_export_from_flags_carries_every_setting(global_flags):
  with flagsaver.flagsaver(export_dir="/tmp/unused", export_precisions=["fp16", "INT8"], export_max_batch_size=64,
                           export_calibration_batches=5, export_exports_to_keep=3, export_save_best_only=True,
                           export_monitor="val_acc", export_minimum_segment_size=7, export_verify=False,
                           export_blocking=True, export_formats=["onnx"], export_verification_samples=600,
                           export_triton_repository="/tmp/triton", export_worker_threads="all",
                           export_worker_nice=5):
    callback = tftrt_keras.TrtExport.from_flags(global_flags, verbose=0)
  assert callback.options.precisions == ("FP16", "INT8")
  assert callback.options.max_batch_size == 64 and callback.options.minimum_segment_size == 7
  assert callback.options.verify is False and callback.options.formats == ("onnx",)
  assert callback.options.verification_samples == 600 and callback.options.triton_repository == "/tmp/triton"
  assert callback.calibration_batches == 5 and callback.exports_to_keep == 3
  assert callback.save_best_only and callback.monitor == "val_acc" and callback.mode == "auto"
  assert callback.blocking and callback.export_dir == "/tmp/unused"
  assert (callback.options.worker_threads, callback.options.worker_nice) == ("all", 5)


@pytest.mark.tf
def test_from_flags_without_export_dir_names_the_flag():
  with pytest.raises(ValueError, match="`export_dir`.*--export_dir"):
    tftrt_keras.TrtExport.from_flags(_defined())

"""absl flags for training scripts: definitions, validators that name the flag, and from_flags (tier unit/tf)."""

import pytest
from absl import flags
from absl.testing import flagsaver

import tftrt_keras
from tftrt_keras import flags as tftrt_flags


@pytest.fixture
def global_flags():
  """absl's global FLAGS with the export flags, defined once per process as a training script does (flagsaver
  works on the global FLAGS only)."""
  if "calibration_batches" not in flags.FLAGS:
    tftrt_flags.define_export_flags()
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return flags.FLAGS


@pytest.mark.unit
def test_nothing_is_defined_at_import():
  fv = flags.FlagValues()
  assert "precisions" not in fv
  tftrt_flags.define_export_flags(fv)
  for name in ("export_dir", "precisions", "calibration_batches", "max_batch_size", "max_workspace_size_bytes",
               "minimum_segment_size", "exports_to_keep", "require_tensorrt", "export_save_best_only", "verify"):
    assert name in fv, name


@pytest.mark.unit
@pytest.mark.parametrize("argv,flag", [
    (["--precisions=FP8"], "--precisions"),
    (["--max_workspace_size_bytes=0"], "--max_workspace_size_bytes"),
    (["--minimum_segment_size=-1"], "--minimum_segment_size"),
    (["--max_batch_size=0"], "--max_batch_size"),
    (["--exports_to_keep=0"], "--exports_to_keep"),
    (["--calibration_batches=-2"], "--calibration_batches"),
    (["--precisions=FP16,INT8", "--calibration_batches=0"], "--calibration_batches"),
])
def test_validators_reject_bad_values_naming_the_flag(argv, flag):
  fv = flags.FlagValues()
  tftrt_flags.define_export_flags(fv)
  with pytest.raises(flags.IllegalFlagValueError) as raised:
    fv(["prog"] + argv)
  assert flag in str(raised.value)


@pytest.mark.unit
def test_int8_is_fine_without_capture_when_not_requested():
  fv = flags.FlagValues()
  tftrt_flags.define_export_flags(fv)
  fv(["prog", "--precisions=FP16", "--calibration_batches=0"])
  assert tftrt_flags.conversion_options_from_flags(fv).precisions == ("FP16",)


@pytest.mark.tf
def test_trt_export_from_flags_carries_every_setting(global_flags):
  with flagsaver.flagsaver(export_dir="/tmp/unused", precisions=["fp16", "INT8"], max_batch_size=64,
                           calibration_batches=5, exports_to_keep=3, export_save_best_only=True,
                           export_monitor="val_acc", minimum_segment_size=7, verify=False, export_blocking=True):
    callback = tftrt_keras.TrtExport.from_flags(global_flags, verbose=0)
  assert callback.options.precisions == ("FP16", "INT8")
  assert callback.options.max_batch_size == 64 and callback.options.minimum_segment_size == 7
  assert callback.options.verify is False
  assert callback.calibration_batches == 5 and callback.exports_to_keep == 3
  assert callback.save_best_only and callback.monitor == "val_acc" and callback.mode == "max"
  assert callback.blocking and callback.export_dir == "/tmp/unused"


@pytest.mark.tf
def test_from_flags_without_export_dir_names_the_flag():
  fv = flags.FlagValues()
  tftrt_flags.define_export_flags(fv)
  fv(["prog"])
  with pytest.raises(ValueError, match="`export_dir`.*--export_dir"):
    tftrt_keras.TrtExport.from_flags(fv)

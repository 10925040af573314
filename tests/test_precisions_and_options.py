"""Precisions, artifact names and `ConversionOptions`: validated once, with one message shape."""

import pytest

from tftrt_keras.options import ConversionOptions
from tftrt_keras.options import artifact_names
from tftrt_keras.precisions import PRECISIONS, normalize_precisions

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("given, expected", [
    (("INT8", "FP16"), ("FP16", "INT8")),          # canonical order, whatever the user's order
    ("fp16, int8", ("FP16", "INT8")),              # the flag's comma-separated form, any case
    (["FP32", "fp32"], ("FP32",)),                 # duplicates collapse
    (PRECISIONS, PRECISIONS),
    ((), ()),                                      # frozen graph only, no TF-TRT variant
])
def test_normalize_precisions(given, expected):
  assert normalize_precisions(given) == expected


@pytest.mark.parametrize("given, received", [
    (("FP16", "FP8"), "precisions=('FP16', 'FP8')"),
    ("FP16,BF16", "precisions='FP16,BF16'"),
    (16, "precisions=16"),
    ((16,), "precisions=(16,)"),
])
def test_unknown_precision_names_argument_received_and_expected(given, received):
  with pytest.raises(ValueError) as info:
    normalize_precisions(given)
  message = str(info.value)
  assert message.startswith(f"Invalid value for argument `precisions`. Received: {received}.")
  assert "Expected a subset of ('FP32', 'FP16', 'INT8')." in message


def test_artifact_names_follow_format_and_precision():
  options = ConversionOptions(precisions=("FP16", "INT8"), formats=("tftrt",))
  assert artifact_names(options) == ("native", "frozen", "calibration", "tftrt_fp16", "tftrt_int8")
  assert artifact_names(ConversionOptions(precisions=(), formats=("tftrt",))) == ("native", "frozen", "calibration")
  # A variant's source is listed too, before it: onnx_int8 is built from onnx_fp32.
  assert artifact_names(ConversionOptions(precisions=("INT8",), formats=("tftrt", "onnx"))) == (
      "native", "frozen", "calibration", "tftrt_int8", "onnx_fp32", "onnx_int8")


@pytest.mark.parametrize("given, expected", [(None, None), ("cpu", "cpu"), (" GPU:1 ", "gpu:1")])
def test_conversion_device_is_normalised(given, expected):
  assert ConversionOptions(conversion_device=given).conversion_device == expected


def test_options_normalise_precisions_and_round_trip_through_json():
  options = ConversionOptions(precisions="int8,fp32", max_batch_size=16, timeout_seconds=2.5)
  assert options.precisions == ("FP32", "INT8")
  data = options.to_json()
  assert data["precisions"] == ["FP32", "INT8"]
  assert ConversionOptions.from_json(data) == options


@pytest.mark.parametrize("field, value, expected", [
    ("max_batch_size", 0, "a positive integer or None"),
    ("max_batch_size", 2.0, "a positive integer or None"),
    ("max_workspace_size_bytes", None, "a positive integer"),
    ("minimum_segment_size", -1, "a positive integer"),
    ("maximum_cached_engines", True, "a positive integer"),
    ("gpu_memory_limit_mb", "4096", "a positive integer or None"),
    ("timeout_seconds", 0, "a positive number (seconds) or None"),
    ("require_tensorrt", "yes", "True or False"),
    ("conversion_device", "gpu", "None, 'cpu' or 'gpu:<index>'"),
    ("conversion_device", "cuda:0", "None, 'cpu' or 'gpu:<index>'"),
    ("conversion_device", 1, "None, 'cpu' or 'gpu:<index>'"),
])
def test_bad_option_names_the_field(field, value, expected):
  with pytest.raises(ValueError) as info:
    ConversionOptions(**{field: value})
  assert str(info.value) == f"Invalid value for argument `{field}`. Received: {field}={value!r}. Expected {expected}."

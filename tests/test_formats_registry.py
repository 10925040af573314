"""The variants a request asks for: names, sources built too, order, and the `formats` argument."""

import pytest

from tftrt_keras import formats
from tftrt_keras.options import ConversionOptions
from tftrt_keras.options import artifact_names


@pytest.mark.unit
def test_every_variant_is_built_after_its_source_and_sources_are_added():
  assert formats.variant_names(("trt",), ("INT8",)) == ("onnx_fp32", "onnx_int8", "trt_int8")
  assert formats.variant_names(("onnx",), ("FP16",)) == ("onnx_fp32", "onnx_fp16")
  assert formats.variant_names(("tftrt", "onnx", "trt"), ("FP32", "FP16", "INT8")) == (
      "tftrt_fp32", "tftrt_fp16", "tftrt_int8", "onnx_fp32", "onnx_fp16", "onnx_int8",
      "trt_fp32", "trt_fp16", "trt_int8")
  assert formats.variant_names(("trt_rtx",), ("FP16",)) == ("onnx_fp32", "onnx_fp16", "trt_rtx_fp16")
  assert formats.split_variant("trt_rtx_int8") == ("trt_rtx", "INT8")
  for name in formats.variant_names(formats.FORMATS, ("FP32", "FP16", "INT8")):
    format_name, precision = formats.split_variant(name)
    source = formats.load_format(format_name).source_of(precision)
    assert source == "native" or source in formats.variant_names(formats.FORMATS, ("FP32", "FP16", "INT8"))


@pytest.mark.unit
def test_artifact_names_lead_with_the_export_itself():
  options = ConversionOptions(formats=("onnx",), precisions=("INT8",))
  assert artifact_names(options) == ("native", "frozen", "calibration", "onnx_fp32", "onnx_int8")
  assert artifact_names(ConversionOptions(formats=(), precisions=("FP16",))) == ("native", "frozen", "calibration")


@pytest.mark.unit
def test_auto_selects_tftrt_only_where_tensorflow_has_it():
  from tftrt_keras.formats.tftrt import format as tftrt  # pylint: disable=g-import-not-at-top
  resolved = formats.resolve_formats("auto")
  assert ("tftrt" in resolved) == tftrt.tensorflow_has_tftrt()
  assert resolved[-3:] == ("onnx", "trt", "trt_rtx")  # the engine formats always: skipped with a reason where they
  # cannot build
  assert tftrt.tensorflow_has_tftrt("2.15.1") and tftrt.tensorflow_has_tftrt("2.17.0")
  assert not tftrt.tensorflow_has_tftrt("2.18.0") and not tftrt.tensorflow_has_tftrt("2.21.0")


@pytest.mark.unit
@pytest.mark.parametrize("given,expected", [("auto", "auto"), ("ONNX, trt", ("onnx", "trt")),
                                            (["trt", "onnx", "onnx"], ("onnx", "trt")), ((), ())])
def test_formats_are_normalized(given, expected):
  assert ConversionOptions(formats=given).formats == expected


@pytest.mark.unit
@pytest.mark.parametrize("given,fragment", [
    ("onnx,tflite", "Unknown: tflite"), (3, "formats=3"), ([1], "formats=[1]")])
def test_bad_formats_name_the_argument(given, fragment):
  with pytest.raises(ValueError, match="argument `formats`") as err:
    ConversionOptions(formats=given)
  assert fragment in str(err.value)


@pytest.mark.unit
@pytest.mark.parametrize("field,value,fragment", [
    ("format_options", {"tflite": {}}, "Unknown format: 'tflite'"),
    ("format_options", ["onnx"], "format_options=['onnx']"),
    ("conversion_policy", "newest", "one of ('latest', 'every')"),
    ("verification_samples", 0, "a positive integer"),
    ("conversion_device", "gpu", "None, 'cpu' or 'gpu:<index>'"),
    ("triton_repository", "", "a non-empty string or None")])
def test_bad_export_options_name_the_argument(field, value, fragment):
  with pytest.raises(ValueError, match=f"argument `{field}`") as err:
    ConversionOptions(**{field: value})
  assert fragment in str(err.value)


@pytest.mark.unit
def test_options_survive_the_trip_to_the_worker():
  options = ConversionOptions(formats=("onnx", "trt"), conversion_policy="every", verification_samples=64,
                              conversion_device="GPU:1", triton_repository="/tmp/repo")
  again = ConversionOptions.from_json(options.to_json())
  assert again == options and again.conversion_device == "gpu:1"
  assert ConversionOptions.from_json(ConversionOptions().to_json()).formats == "auto"
  import pathlib  # pylint: disable=g-import-not-at-top
  assert ConversionOptions(triton_repository=pathlib.Path("/tmp/repo")).triton_repository == "/tmp/repo"

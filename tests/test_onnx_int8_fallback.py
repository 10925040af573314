"""The INT8 fallback (tftrt_keras.formats.onnx.int8_fallback): real tf2onnx models, real ONNX Runtime.

One briefly trained digits CNN and its outlier twin (the same function, one Conv input of extreme range: see
tests/int8_models.py): plain INT8 clears the gate on the first and falls off the cliff on the second.
"""

import json
import os

import numpy as np
import pytest

from tftrt_keras import agreement
from tftrt_keras.options import ConversionOptions
from tftrt_keras.formats.onnx import format as onnx_format
from tftrt_keras.artifacts.layout import ExportLayout

pytestmark = pytest.mark.tf

_MISSING = onnx_format.import_failure_reason(onnx_format._import_failures())  # pylint: disable=protected-access
FORMAT = onnx_format.FORMAT
CALIBRATION = 600  # 300 calibrate, 300 judge on the calibration side


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  if _MISSING:
    pytest.skip(_MISSING)
  from examples import digits as digits_data  # pylint: disable=g-import-not-at-top
  from tests import int8_models, onnx_models  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("int8_fallback")
  (x_train, y_train), (x_val, _) = digits_data.load_digits(validation_fraction=0.3, seed=0)
  plain, twin = int8_models.digits_cnn_and_outlier_twin(x_train, y_train)
  built = {}
  for label, model in (("plain", plain), ("twin", twin)):
    native = onnx_models.save_keras_model(model, root / label / "native")
    job = onnx_models.build_job(native, root / label, {"image": x_train[:CALIBRATION]})
    fp32, _ = onnx_models.build_variant(FORMAT, job, "FP32", root / label)
    built[label] = {"native": native, "fp32": fp32, "job": job}
  return {"built": built, "root": root, "calibration": x_train[:CALIBRATION], "verification": x_val}


def _int8(models, label, directory, calibration=None, gate=0.97, **onnx_options):
  """Builds `onnx_int8` of one model with `onnx_options` (and `calibration` samples instead of the usual ones,
  `gate` as `verify_min_agreement`); returns (directory, manifest details, fallback)."""
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  built = models["built"][label]
  options = ConversionOptions(formats=("onnx",), format_options={"onnx": onnx_options}, verify_min_agreement=gate)
  samples = models["calibration"] if calibration is None else calibration
  job = onnx_models.build_job(built["native"], directory, {"image": samples}, options=options)
  out, details = onnx_models.build_variant(FORMAT, job, "INT8", directory, source_dir=built["fp32"])
  with open(os.path.join(out, "model.json"), encoding="utf-8") as f:
    return out, details, json.load(f)["int8"]["fallback"]


def _run(directory, x):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(os.path.join(directory, "model.onnx"), providers=["CPUExecutionProvider"])
  return session.run(None, {"image": x})[0]


def _dequantized_inputs(directory):
  """{node name: True when an input comes from a DequantizeLinear} of the Conv/MatMul/Gemm nodes."""
  import onnx  # pylint: disable=g-import-not-at-top
  model = onnx.load(os.path.join(directory, "model.onnx"))
  dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
  return {n.name: any(i in dequantized for i in n.input) for n in model.graph.node
          if n.op_type in ("Conv", "MatMul", "Gemm")}


@pytest.fixture(scope="module")
def twin_auto(models):
  directory = models["root"] / "twin_auto"
  return _int8(models, "twin", directory)


BRIGHTER = 1.25


@pytest.fixture(scope="module")
def twin_minmax(models):
  """The twin by MinMax, one calibration sample of the hold-out brightened by BRIGHTER (pixels otherwise <= 1):
  the input's range then tells whether the hold-out took part in a calibration. Returns `_int8`'s triple and
  the samples."""
  from tftrt_keras.formats.onnx import int8_fallback as onnx_int8_fallback  # pylint: disable=g-import-not-at-top
  samples = np.array(models["calibration"])
  assert samples.max() == 1.0
  _, held = onnx_int8_fallback.split_calibration({"index": np.arange(len(samples))})
  samples[held["index"][0]] *= BRIGHTER
  directory = models["root"] / "twin_minmax"
  return _int8(models, "twin", directory, calibration=samples, int8_calibration="minmax") + (samples,)


def test_a_model_that_passes_plain_int8_runs_no_search(models, tmp_path):
  _, details, fallback = _int8(models, "plain", tmp_path)
  assert fallback["searched"] is False and fallback["kept"] == []
  assert fallback["why"] == "plain INT8 clears the gate on the calibration-side hold-out"
  assert fallback["before"]["passed"] and fallback["after"] == fallback["before"]
  # Auto calibration stops at MinMax once it clears the gate: no second build, no gated model, no steps.
  assert list(fallback["methods"]) == ["minmax"] and fallback["calibration_chosen"] == "minmax"
  assert "steps" not in fallback and fallback["search_seconds"] < 0.5
  assert details["int8_fallback"]["searched"] is False and details["quantized_ops"] == {"Conv": 2, "MatMul": 1}
  # Judged on the halves, shipped calibrated on all the samples (MinMax uses every one).
  assert fallback["calibration_samples"] == fallback["holdout_samples"] == CALIBRATION // 2
  assert details["calibration_samples"] == fallback["final_calibration_samples"] == CALIBRATION
  assert f"all {CALIBRATION} calibration samples" in fallback["final_calibration"]


def test_the_layer_that_costs_the_gate_is_kept_fp32_and_the_gate_then_holds(models, twin_auto):
  directory, details, fallback = twin_auto
  assert fallback["before"]["passed"] is False
  assert fallback["before"]["outputs"]["probabilities"]["top1_agreement"] < 0.5
  assert fallback["searched"] is True and fallback["reached_gate"] is True and fallback["after"]["passed"]
  (kept,) = fallback["kept"]
  # The Conv reading the outlier channel; the first Conv and the Dense stay INT8.
  assert kept["op_type"] == "Conv" and kept["rank"] == 1 and kept["agreement_delta"] < -0.5
  inputs = _dequantized_inputs(directory)
  assert inputs[kept["node"]] is False and sum(inputs.values()) == 2
  assert kept["node"] in details["int8_kept_fp32"] and details["quantized_ops"] == {"Conv": 1, "MatMul": 1}
  from tftrt_keras.formats.onnx import quantize as onnx_quantize  # pylint: disable=g-import-not-at-top
  import onnx  # pylint: disable=g-import-not-at-top
  assert onnx_quantize.nonzero_zero_points(onnx.load(os.path.join(directory, "model.onnx"))) == []
  # On the verification samples, which the search never saw, the gate holds too.
  x = models["verification"]
  reference = _run(models["built"]["twin"]["fp32"], x)
  agreeing = int(np.sum(_run(directory, x).argmax(1) == reference.argmax(1)))
  assert agreement.agreement_lower_bound(agreeing, len(x)) >= 0.97
  assert fallback["search_seconds"] <= fallback["budget_seconds"] + fallback["plain_build_seconds"]


def test_the_calibration_choice_is_recorded(models, twin_auto, twin_minmax):
  _, details, fallback = twin_auto
  assert set(fallback["methods"]) == {"minmax", "percentile"}  # MinMax missed, so Percentile was tried
  best = max(fallback["methods"], key=lambda m: fallback["methods"][m]["margin"])
  assert fallback["calibration_chosen"] == best == details["calibration"]
  assert fallback["calibration_requested"] == "auto" and best in fallback["calibration_why"]
  _, details, fallback, _ = twin_minmax
  assert list(fallback["methods"]) == ["minmax"] and details["calibration"] == "minmax"
  assert fallback["calibration_why"] == "int8_calibration set explicitly" and fallback["reached_gate"]


def _scales(path):
  """{scale initializer name: array} of every QuantizeLinear/DequantizeLinear in the model at `path`."""
  import onnx  # pylint: disable=g-import-not-at-top
  from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  model = onnx.load(str(path))
  initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
  return {n.input[1]: initializers[n.input[1]] for n in model.graph.node
          if n.op_type in ("QuantizeLinear", "DequantizeLinear")}


def test_the_shipped_model_is_calibrated_on_every_calibration_sample(models, twin_minmax, tmp_path):
  """Method and kept nodes come from the halves; the model written is what quantize_int8 makes of them on all
  the samples, not the half-calibrated model the hold-out judged."""
  from tftrt_keras.formats.onnx import int8_fallback as onnx_int8_fallback  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import quantize as onnx_quantize  # pylint: disable=g-import-not-at-top
  directory, details, fallback, calibration = twin_minmax
  method, kept = fallback["calibration_chosen"], {entry["node"]: "kept" for entry in fallback["kept"]}
  assert kept and fallback["searched"] and method == "minmax"
  fp32 = os.path.join(models["built"]["twin"]["fp32"], "model.onnx")
  samples, dtypes = {"image": calibration}, {"image": "float32"}
  everything = onnx_quantize.quantize_int8(fp32, tmp_path / "all.onnx", samples, dtypes, calibration=method,
                                           keep_fp32=kept)
  half, _ = onnx_int8_fallback.split_calibration(samples)
  onnx_quantize.quantize_int8(fp32, tmp_path / "half.onnx", half, dtypes, calibration=method, keep_fp32=kept)
  assert details["calibration_samples"] == fallback["final_calibration_samples"] == CALIBRATION
  assert fallback["calibration_samples"] == CALIBRATION // 2
  assert f"all {CALIBRATION} calibration samples" in fallback["final_calibration"]
  shipped, expected, half_scales = (_scales(p) for p in (os.path.join(directory, "model.onnx"), tmp_path / "all.onnx",
                                                         tmp_path / "half.onnx"))
  assert sorted(shipped) == sorted(expected) == sorted(half_scales)
  for name, scale in expected.items():
    np.testing.assert_array_equal(shipped[name], scale, err_msg=name)
  # The input's range is the brightened hold-out sample's (symmetric INT8: scale = max |x| / 127), which the
  # half-calibrated model the hold-out judged never saw.
  brightened = [name for name, scale in expected.items() if scale.size == 1
                and np.isclose(scale, BRIGHTER / 127, rtol=1e-6) and np.isclose(half_scales[name], 1 / 127, rtol=1e-6)]
  assert brightened, {name: (half_scales[name], scale) for name, scale in expected.items() if scale.size == 1}
  assert fallback["final_build_seconds"] > 0


def test_the_budget_stops_the_search(models, tmp_path):
  directory, _, fallback = _int8(models, "twin", tmp_path, int8_search_budget=1e-6)
  assert fallback["searched"] is True and fallback["budget_exhausted"] is True
  assert fallback["steps"] == [] and fallback["kept"] == [] and fallback["reached_gate"] is False
  assert "not reached within the budget" in fallback["why"] and "verification decides" in fallback["why"]
  assert _run(directory, models["verification"][:4]).shape == (4, 10)  # the best found is built all the same


def test_when_no_step_holds_the_best_on_the_whole_holdout_is_kept(models, tmp_path):
  """A gate no 300-sample hold-out can clear (a lower bound of 0.999): every step misses and stops early, with a
  margin that counts the rest of the hold-out as agreeing. Each is judged again on the whole hold-out, and the
  nodes kept are those of the best whole figure, not of the most optimistic slice."""
  _, _, fallback = _int8(models, "twin", tmp_path, gate=0.999, int8_calibration="minmax")
  assert fallback["searched"] is True and fallback["reached_gate"] is False and fallback["budget_exhausted"] is False
  steps = fallback["steps"]
  assert steps and not any(step["passed"] for step in steps)
  whole = {0: fallback["before"]["margin"]}  # the plain model, judged on the whole hold-out
  for step in steps:
    assert step["samples_judged"] < fallback["holdout_samples"]
    assert step["whole_holdout_margin"] <= step["margin"]  # the slice's margin was the optimistic one
    whole[step["kept"]] = step["whole_holdout_margin"]
  assert len(fallback["kept"]) == max(whole, key=lambda kept: (whole[kept], -kept))
  assert len(set(whole.values())) > 1  # the whole figures tell the steps apart


def test_the_search_sees_only_calibration_samples(models, tmp_path):
  """Through the real worker: its verification hold-out never reaches the INT8 build."""
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  samples = np.concatenate([models["calibration"], models["verification"]])
  manifest = tftrt_keras.export_saved_model(
      models["built"]["twin"]["native"], str(tmp_path / "export"), calibration_data={"image": samples},
      options=ConversionOptions(formats=("onnx",), precisions=("INT8",), verification_samples=500,
                                verify_timed_runs=2))
  entry = manifest["artifacts"]["onnx_int8"]
  verified = entry["verification"]["samples"]
  assert verified == len(samples) // 4  # the worker's own hold-out: a quarter
  with open(os.path.join(ExportLayout(str(tmp_path / "export")).path(
      "onnx_int8", manifest["version"]), "model.json"), encoding="utf-8") as f:
    fallback = json.load(f)["int8"]["fallback"]
  # Every sample the search used (to calibrate or to judge) is one of the calibration samples.
  assert fallback["calibration_samples"] + fallback["holdout_samples"] == len(samples) - verified
  # The shipped model is calibrated on all of them (Percentile drops a last batch shorter than 32).
  assert len(samples) - verified - 32 < fallback["final_calibration_samples"] <= len(samples) - verified
  assert fallback["reached_gate"] is True
  # Verification judges on its own samples; what it says is its own verdict (ok here at a bound near 0.97).
  assert entry["verification"]["outputs"]["probabilities"]["top1_agreement"] >= 0.97


# --- a regressor, judged by relative error -----------------------------------------------------------------------

def _outlier_regressor(path, factor=1000.0):
  """x[16] -> MatMul 16x32 -> Relu -> MatMul 32x32 -> Relu -> MatMul 32x1: y[1], hidden unit 0 of the first
  layer scaled by `factor` and its weights into the second by 1/factor (the same function, one extreme input)."""
  import onnx  # pylint: disable=g-import-not-at-top
  from onnx import TensorProto, helper, numpy_helper  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  w1, w2, w3 = ((rng.normal(size=s) / np.sqrt(s[0])).astype("float32") for s in ((16, 32), (32, 32), (32, 1)))
  w1[:, 0] *= factor
  w2[0, :] /= factor
  nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="dense1"), helper.make_node("Relu", ["h1"], ["r1"]),
           helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="dense2"), helper.make_node("Relu", ["h2"], ["r2"]),
           helper.make_node("MatMul", ["r2", "w3"], ["y"], name="dense3")]
  graph = helper.make_graph(nodes, "regressor", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
                            [numpy_helper.from_array(w, n) for n, w in (("w1", w1), ("w2", w2), ("w3", w3))])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  model.ir_version = 8
  onnx.save(model, str(path))


@pytest.mark.unit
def test_a_regressor_is_judged_by_relative_error_and_fixed(tmp_path):
  pytest.importorskip("onnxruntime")
  from tftrt_keras.formats.onnx import int8_fallback as onnx_int8_fallback  # pylint: disable=g-import-not-at-top
  _outlier_regressor(tmp_path / "fp32.onnx")
  samples = {"x": np.random.default_rng(1).normal(size=(400, 16)).astype("float32")}
  options = ConversionOptions()
  result = onnx_int8_fallback.build_int8(str(tmp_path / "fp32.onnx"), str(tmp_path / "int8.onnx"), samples,
                                         {"x": "float32"}, options, onnx_format.OnnxOptions())
  fallback = result["fallback"]
  before, after = fallback["before"]["outputs"]["y"], fallback["after"]["outputs"]["y"]
  assert "top1_agreement" not in before  # one column: not a classifier
  assert before["max_relative_error"] > options.verify_tolerance_int8 >= after["max_relative_error"]
  assert [entry["node"] for entry in fallback["kept"]] == ["dense2"] and fallback["reached_gate"]
  assert fallback["kept"][0]["agreement_delta"] is None  # no classifier output to count agreement on


@pytest.mark.unit
@pytest.mark.parametrize("budget", [-1, True, "5", 1e4])
def test_a_bad_search_budget_is_rejected_naming_the_argument(budget):
  with pytest.raises(ValueError, match=r"`format_options\['onnx'\].int8_search_budget`"):
    ConversionOptions(format_options={"onnx": {"int8_search_budget": budget}})


@pytest.mark.unit
def test_auto_calibration_and_the_budget_are_the_defaults():
  options = onnx_format.OnnxOptions()
  assert options.int8_calibration == "auto" and options.int8_search_budget == 5.0
  assert onnx_format.OnnxOptions(int8_calibration="AUTO", int8_search_budget=0).int8_calibration == "auto"

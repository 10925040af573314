"""The TF-TRT format's judgment: what TF-TRT built is counted, and a conversion without engines is `failed`.

The counting runs on synthetic protos and files made here with protobuf and TensorFlow's own TFRecord writer
(no TF-TRT needed): GraphDefs and saved_model.pb files holding TRTEngineOp NodeDefs, and engine asset files
holding `TRTEngineInstance` records. The end-to-end tests run the pipeline with the TEST DOUBLE
`tests.fake_trt_backend.FakeTrtBackendForTests` (TF-TRT cannot run here), told through its environment variables
what a TF-TRT conversion reported; the real converter's run is in tests/test_trt_tier.py.
"""

import os

import numpy as np
import pytest

from tests import saved_models
from tests.fake_trt_backend import encode_engine_instance, write_engine_asset
from tftrt_keras.pipeline import prepare
from tftrt_keras.pipeline import run as export_run
from tftrt_keras.formats.tftrt import convert as trt_convert
from tftrt_keras.options import ConversionOptions
from tftrt_keras.formats.base import VariantFailed
from tftrt_keras.formats.tftrt.format import (build_inputs_from_samples, calibration_batches, engine_batch_sizes,
                                       judge_conversion, synthesize_build_inputs, tensorflow_has_tftrt)

ENGINE = "TRTEngineOp_000_000"
SEGMENT_OPS = ("MatMul", "BiasAdd", "Relu", "MatMul", "BiasAdd")


# --- synthetic protos

def _node(graph_or_function_nodes, name, op, segment=None):
  node = graph_or_function_nodes.add(name=name, op=op)
  if segment:
    node.attr["segment_func"].func.name = segment
  return node


def _converted_graph(engines=1, extra_tf_ops=("Placeholder", "Identity")):
  """A GraphDef as `converter.convert()` returns it: top-level TRTEngineOps, native segments in the library."""
  from tensorflow.core.framework import graph_pb2  # pylint: disable=g-import-not-at-top
  graph = graph_pb2.GraphDef()
  for i, op in enumerate(extra_tf_ops):
    _node(graph.node, f"n{i}", op)
  for e in range(engines):
    name = f"TRTEngineOp_000_{e:03d}"
    _node(graph.node, name, "TRTEngineOp", segment=name + "_native_segment")
    function = graph.library.function.add()
    function.signature.name = name + "_native_segment"
    for j, op in enumerate(SEGMENT_OPS):
      _node(function.node_def, f"s{j}", op)
  return graph


def _saved_model_with_engines(directory, engine_node_names):
  """Writes a saved_model.pb whose engines sit inside library functions, as a saved TF-TRT model holds them."""
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  proto = saved_model_pb2.SavedModel()
  graph = proto.meta_graphs.add().graph_def
  serve = graph.library.function.add()
  serve.signature.name = "__inference_pruned_101"
  _node(serve.node_def, "x", "Identity")
  for name in engine_node_names:
    _node(serve.node_def, name, "TRTEngineOp", segment=trt_convert.canonical_engine_name(name) + "_native_segment")
  segment = graph.library.function.add()
  segment.signature.name = ENGINE + "_native_segment"
  for j, op in enumerate(SEGMENT_OPS):
    _node(segment.node_def, f"s{j}", op)
  wrapper = graph.library.function.add()
  wrapper.signature.name = "__inference_signature_wrapper_202"
  _node(wrapper.node_def, "call", "StatefulPartitionedCall")
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
    f.write(proto.SerializeToString())
  return proto


@pytest.mark.tf
def test_conversion_summary_counts_as_the_converter_summary_does():
  summary = trt_convert.conversion_summary(_converted_graph(engines=2))
  assert summary == {"trt_engine_ops": 2, "segments": 2, "ops_converted": 10, "ops_in_tensorflow": 2,
                     "converted_op_types": {"BiasAdd": 4, "MatMul": 4, "Relu": 2}}


@pytest.mark.tf
def test_conversion_summary_without_engines_leaves_every_op_in_tensorflow():
  summary = trt_convert.conversion_summary(_converted_graph(engines=0, extra_tf_ops=("Placeholder",) + SEGMENT_OPS))
  assert summary == {"trt_engine_ops": 0, "segments": 0, "ops_converted": 0, "ops_in_tensorflow": 6,
                     "converted_op_types": {}}


@pytest.mark.tf
def test_engine_ops_in_a_saved_model_are_found_in_its_function_library(tmp_path):
  # One engine, instantiated under two scopes: TF-TRT shares one cache (and one asset) by the canonical name.
  proto = _saved_model_with_engines(str(tmp_path), ["StatefulPartitionedCall/" + ENGINE, ENGINE])
  assert trt_convert.saved_model_engine_ops(str(tmp_path)) == [ENGINE]
  summary = trt_convert.conversion_summary(proto.meta_graphs[0].graph_def)
  # TensorFlow's part is the engine's host function only (its Identity), not the segment or other functions.
  assert summary == {"trt_engine_ops": 1, "segments": 1, "ops_converted": 5, "ops_in_tensorflow": 1,
                     "converted_op_types": {"BiasAdd": 2, "MatMul": 2, "Relu": 1}}
  _saved_model_with_engines(str(tmp_path / "none"), [])
  assert trt_convert.saved_model_engine_ops(str(tmp_path / "none")) == []


@pytest.mark.tf
def test_engine_assets_are_read_with_the_shapes_each_engine_was_built_for(tmp_path):
  write_engine_asset(str(tmp_path), ENGINE, [encode_engine_instance([[1, 16]], b"x" * 300),
                                             encode_engine_instance([[32, 16], [32, 3]])])
  write_engine_asset(str(tmp_path), "TRTEngineOp_000_001", [])  # its build failed: TF-TRT writes no record
  (tmp_path / "assets" / "vocabulary.txt").write_text("a\nb\n")  # not an engine
  engines = trt_convert.read_engine_assets(str(tmp_path))
  assert [e["engine"] for e in engines] == [ENGINE, "TRTEngineOp_000_001"]
  assert engines[0]["file"] == f"assets/trt-serialized-engine.{ENGINE}"
  assert engines[0]["bytes"] == os.path.getsize(tmp_path / "assets" / f"trt-serialized-engine.{ENGINE}")
  assert engines[0]["instances"] == [{"input_shapes": [[1, 16]], "engine_bytes": 300},
                                     {"input_shapes": [[32, 16], [32, 3]], "engine_bytes": 55}]
  assert engines[1]["instances"] == []
  assert trt_convert.read_engine_assets(str(tmp_path / "missing")) == []


@pytest.mark.tf
def test_a_truncated_engine_asset_is_reported_not_trusted(tmp_path):
  write_engine_asset(str(tmp_path), ENGINE, [encode_engine_instance([[8, 4]])])
  path = tmp_path / "assets" / f"trt-serialized-engine.{ENGINE}"
  path.write_bytes(path.read_bytes()[:-10])
  (entry,) = trt_convert.read_engine_assets(str(tmp_path))
  assert "instances" not in entry and "truncated TFRecord" in entry["error"]


# --- judging the result

def _summary(engines=1, saved=None):
  names = [f"TRTEngineOp_000_{i:03d}" for i in range(engines)]
  return {"trt_engine_ops": engines, "segments": engines, "ops_converted": 5 * engines, "ops_in_tensorflow": 4,
          "trt_engine_ops_saved": names if saved is None else saved}


def _assets(*names, shapes=((1, 4),)):
  return [{"engine": n, "file": f"assets/trt-serialized-engine.{n}", "bytes": 90,
           "instances": [{"input_shapes": [list(s) for s in shapes], "engine_bytes": 40}]} for n in names]


@pytest.mark.unit
def test_no_segment_at_all_is_failed_with_the_counts():
  with pytest.raises(VariantFailed) as info:
    judge_conversion(_summary(engines=0), [], [1, 8], 8, minimum_segment_size=3)
  assert str(info.value) == ("TF-TRT built no engine: it found no segment to convert (4 ops stay in TensorFlow; "
                             "minimum_segment_size=3), so this variant would only run the native graph")


@pytest.mark.unit
def test_engine_ops_without_any_serialized_engine_are_failed():
  empty = [{"engine": "TRTEngineOp_000_000", "file": "assets/x", "bytes": 0, "instances": []}]
  with pytest.raises(VariantFailed, match=r"placed 1 TRTEngineOp\(s\) but serialized no TensorRT engine in assets/ "
                                          r"\(every engine build failed"):
    judge_conversion(_summary(), empty, [1, 8], 8, 3)
  with pytest.raises(VariantFailed, match="input 'x' has unknown non-batch dimensions"):
    judge_conversion(_summary(), [], [], 1, 3, no_build_reason="no engine could be prebuilt from the signature "
                                                               "alone: input 'x' has unknown non-batch dimensions")


@pytest.mark.unit
def test_engines_prebuilt_for_lists_what_exists():
  details = judge_conversion(_summary(), _assets("TRTEngineOp_000_000"), [1, 4, 8], 8, 3)
  assert details["engines_prebuilt_for"] == [1, 4, 8] and details["profile_batch_range"] == [1, 8]
  assert details["engines_serialized"] == 1 and "warnings" not in details
  assert details["engines"] == [{"engine": "TRTEngineOp_000_000", "file": "assets/trt-serialized-engine."
                                 "TRTEngineOp_000_000", "bytes": 90, "input_shapes": [[[1, 4]]]}]
  assert details["conversion"] == {"trt_engine_ops": 1, "segments": 1, "ops_converted": 5, "ops_in_tensorflow": 4}


@pytest.mark.unit
def test_an_engine_op_without_its_engine_means_nothing_is_fully_prebuilt_and_says_which():
  details = judge_conversion(_summary(engines=2), _assets("TRTEngineOp_000_000"), [1, 8], 8, 3)
  assert details["engines_prebuilt_for"] == [] and details["profile_batch_range"] is None
  assert "TRTEngineOp(s) without a serialized engine: TRTEngineOp_000_001" in details["warnings"][0]
  assert details["warnings"][1] == ("no engine is prebuilt for batch size 8 (no batch size is fully prebuilt): "
                                    "TF-TRT builds one at the first such request")


@pytest.mark.unit
def test_a_requested_batch_size_beyond_the_built_ones_is_said_plainly():
  details = judge_conversion(_summary(), _assets("TRTEngineOp_000_000"), [1, 4], 16, 3)
  assert details["engines_prebuilt_for"] == [1, 4]
  assert details["warnings"] == ["no engine is prebuilt for batch size 16 (the largest prebuilt is 4): TF-TRT "
                                 "builds one at the first such request"]


# --- calibration and build inputs

@pytest.mark.unit
def test_engine_batch_sizes_stay_inside_the_profile():
  assert engine_batch_sizes([8, 3], 16) == [1, 3, 8, 16]
  assert engine_batch_sizes([8, 3], 4) == [1, 3, 4]
  assert engine_batch_sizes([], 1) == [1]


@pytest.mark.unit
def test_calibration_rebatches_within_max_batch_size_and_uses_every_sample():
  samples = {"x": np.arange(10).reshape(10, 1)}
  batches, note = calibration_batches(samples, captured_sizes=[4, 4, 2], max_batch_size=3)
  assert note == {"samples": 10, "batch_size": 3, "batches": 4, "repeated": 2}
  assert {b["x"].shape for b in batches} == {(3, 1)}  # one shape: TF-TRT's calibration profile
  used = np.concatenate([b["x"] for b in batches]).ravel().tolist()
  assert set(used) == set(range(10)) and used[-2:] == [0, 1]  # the last batch is filled from the start
  batches, note = calibration_batches({"x": np.zeros((5, 2))}, captured_sizes=[8], max_batch_size=16)
  assert note == {"samples": 5, "batch_size": 5, "batches": 1, "repeated": 0} and batches[0]["x"].shape == (5, 2)
  assert calibration_batches({}, [], 8) == ([], {"samples": 0, "batch_size": 0, "batches": 0, "repeated": 0})


@pytest.mark.unit
def test_build_inputs_come_from_the_samples_in_every_profile_size():
  samples = {"a": np.arange(3, dtype="float32").reshape(3, 1), "b": np.arange(3).reshape(3, 1, 1)}
  batches = build_inputs_from_samples(samples, [1, 3, 8])
  assert [b["a"].shape[0] for b in batches] == [1, 3, 8] and batches[2]["b"].shape == (8, 1, 1)
  assert batches[2]["a"].ravel().tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


@pytest.mark.unit
def test_build_inputs_are_synthesized_from_the_signature_without_samples():
  signature = {"inputs": [{"name": "ids", "dtype": "int32", "shape": [None, 5]},
                          {"name": "x", "dtype": "float32", "shape": [None, 4, 2]}], "outputs": []}
  batches, reason = synthesize_build_inputs(signature, [1, 8])
  assert reason is None and len(batches) == 2
  assert batches[1]["x"].shape == (8, 4, 2) and batches[1]["x"].dtype == np.float32
  assert batches[0]["ids"].shape == (1, 5) and batches[0]["ids"].dtype == np.int32 and not batches[0]["ids"].any()


@pytest.mark.unit
@pytest.mark.parametrize("tensor, says", [
    ({"name": "image", "dtype": "float32", "shape": [None, None, None, 3]},
     "input 'image' has unknown non-batch dimensions [None, None, None, 3]"),
    ({"name": "token", "dtype": "string", "shape": [None]}, "input 'token' is string, which cannot be synthesized"),
    ({"name": "blob", "dtype": "float32", "shape": None}, "input 'blob' has an unknown rank"),
])
def test_inputs_that_cannot_be_synthesized_say_why(tensor, says):
  batches, reason = synthesize_build_inputs({"inputs": [tensor]}, [1])
  assert batches == [] and says in reason and "calibration_data" in reason


# --- through the pipeline (TEST DOUBLE at the TF-TRT call)


def _export(root, precisions, batches, **options):
  request = prepare.prepare_export(
      str(root), 1, {"kind": "test"},
      ConversionOptions(precisions=precisions, formats=("tftrt",), verify=False, **options),
      write_native=lambda d: saved_models.classifier(d), batches=batches)
  return export_run.run_export(request)["artifacts"]


@pytest.mark.tf
def test_conversion_with_engines_is_built_and_records_them(tmp_path, monkeypatch, fake_tftrt):
  monkeypatch.setenv("FAKE_TRT_ENGINES", "2")
  artifacts = _export(tmp_path / "exports", ("FP16", "INT8"), [saved_models.samples(8, seed=1)] * 3,
                      max_batch_size=16)
  for name in ("tftrt_fp16", "tftrt_int8"):
    entry = artifacts[name]
    # Built and build-checked (its engines counted); verify=False here, so never compared: unverified, saying so.
    assert (entry["status"], entry["reason"]) == ("unverified", "verification turned off (verify=False)"), entry
    assert entry["conversion"]["trt_engine_ops"] == 2 and entry["engines_serialized"] == 2
    assert [e["engine"] for e in entry["engines"]] == ["TRTEngineOp_000_000", "TRTEngineOp_000_001"]
    assert entry["engines"][0]["input_shapes"] == [[[1, 4]]]  # the first build batch, as TF-TRT keys it
    # 1, each calibration batch size (8, 8 and the last 2 of the 18 kept for calibration), and max_batch_size.
    assert entry["engines_prebuilt_for"] == [1, 2, 8, 16] and entry["build_inputs"] == "captured samples"
  # 24 captured samples, a quarter held out for verification: 18 calibrate in batches of 8 (6 reused).
  assert artifacts["tftrt_int8"]["calibration"] == {"samples": 18, "batch_size": 8, "batches": 3, "repeated": 6}


@pytest.mark.tf
@pytest.mark.parametrize("knobs, reason", [
    ({"FAKE_TRT_ENGINES": "0"}, "TF-TRT built no engine: it found no segment to convert (7 ops stay in TensorFlow; "
                                "minimum_segment_size=3)"),
    ({"FAKE_TRT_SERIALIZED": "0"}, "TF-TRT placed 1 TRTEngineOp(s) but serialized no TensorRT engine"),
])
def test_conversion_without_engines_is_failed_and_leaves_no_directory(tmp_path, monkeypatch, knobs, reason, fake_tftrt):
  for name, value in knobs.items():
    monkeypatch.setenv(name, value)
  artifacts = _export(tmp_path / "exports", ("FP32",), [saved_models.samples(8, seed=1)])
  entry = artifacts["tftrt_fp32"]
  assert entry["status"] == "failed" and entry["reason"].startswith(reason), entry
  assert not os.path.exists(tmp_path / "exports" / "tftrt_fp32" / "1")


@pytest.mark.tf
def test_without_samples_fp32_engines_are_built_from_the_signature_and_int8_is_skipped(tmp_path, fake_tftrt):
  artifacts = _export(tmp_path / "exports", ("FP32", "INT8"), None, max_batch_size=4)
  fp32 = artifacts["tftrt_fp32"]
  assert fp32["status"] == "unverified", fp32  # built (verify=False)
  assert fp32["build_inputs"] == "synthesized from the signature (no samples were captured)"
  assert fp32["engines_prebuilt_for"] == [1, 4] and fp32["engines"][0]["input_shapes"] == [[[1, 4]]]
  int8 = artifacts["tftrt_int8"]
  assert int8["status"] == "skipped" and int8["reason"].startswith("INT8 needs calibration data")

"""Architectures nobody here designed (tests/zoo_models.py: `TEST_SUITE`) through every ONNX variant.

Each model is trained briefly on digits (so agreement figures mean something), written as the callback
writes it, converted by tf2onnx (FP32), onnxconverter-common (FP16) and ONNX Runtime's quantizer (INT8), and
each variant run by ONNX Runtime against the normal export in TensorFlow on the 697 validation samples.
The FP16 bounds are what FP16 arithmetic gives on these networks (measured: max abs error on probabilities
0.0006-0.012, top-1 agreement 0.997-1.0), with margin; they guard the conversion, not the verdict.
"""

import json
import os

import numpy as np
import pytest

from tests import zoo_models
from tftrt_keras.formats.onnx import format as onnx_format

from importlib import metadata

# One TF line is enough for the zoo (the conversion code is the same on every line) and it costs about a
# minute per line: it runs on current TensorFlow, where users bring these architectures today.
_TENSORFLOW = metadata.version("tensorflow")
pytestmark = [pytest.mark.tf, pytest.mark.skipif(
    tuple(int(p) for p in _TENSORFLOW.split(".")[:2]) < (2, 21),
    reason=f"the zoo runs on the TF 2.21 line only (this is TensorFlow {_TENSORFLOW})")]

_MISSING = onnx_format.import_failure_reason(onnx_format._import_failures())  # pylint: disable=protected-access
FORMAT = onnx_format.FORMAT
TOKEN_MODELS = [n for n in zoo_models.TEST_SUITE if zoo_models.ARCHITECTURES[n][0].data == "tokens"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
  """{name: {"zoo", "job", "built": {precision: (dir, details)}, "outputs": {precision|"native": array}}}."""
  if _MISSING:
    pytest.skip(_MISSING)
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx.runner import OnnxRuntimeRunner  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.savedmodel import SavedModelRunner  # pylint: disable=g-import-not-at-top
  found = {}
  for name in zoo_models.TEST_SUITE:
    trained = zoo_models.trained(name)
    root = tmp_path_factory.mktemp(name)
    saved_model = onnx_models.save_keras_model(trained.model, root / "native")
    # Calibration from the training split, judged on the validation split: never the same samples.
    job = onnx_models.build_job(saved_model, root, {trained.input_name: trained.x_train[:128]})
    built = {"FP32": onnx_models.build_variant(FORMAT, job, "FP32", root)}
    for precision in ("FP16", "INT8"):
      built[precision] = onnx_models.build_variant(FORMAT, job, precision, root, source_dir=built["FP32"][0])
    feeds = {trained.input_name: trained.x_val}
    output = job.signature["outputs"][0]["name"]
    with SavedModelRunner(saved_model, "serving_default") as runner:
      outputs = {"native": runner.run(feeds)[output]}
    for precision, (directory, _) in built.items():
      with OnnxRuntimeRunner(directory) as runner:
        outputs[precision] = runner.run(feeds)[output]
    found[name] = {"zoo": trained, "job": job, "built": built, "outputs": outputs}
  return found


def _figures(entry, precision):
  from tftrt_keras.verify.verification import compare_output  # pylint: disable=g-import-not-at-top
  return compare_output(entry["outputs"]["native"], entry["outputs"][precision])


def _graph(entry, precision):
  import onnx  # pylint: disable=g-import-not-at-top
  return onnx.load(os.path.join(entry["built"][precision][0], "model.onnx"))


@pytest.mark.parametrize("name", zoo_models.TEST_SUITE)
def test_zoo_model_learned_its_task(zoo, name):
  assert zoo[name]["zoo"].val_accuracy >= 0.5, zoo[name]["zoo"].val_accuracy  # chance is 0.1


@pytest.mark.parametrize("name", zoo_models.TEST_SUITE)
def test_onnx_fp32_computes_what_tensorflow_computes(zoo, name):
  figures = _figures(zoo[name], "FP32")
  assert figures["max_relative_error"] <= 1e-4 and figures["top1_agreement"] == 1.0, figures


@pytest.mark.parametrize("name", zoo_models.TEST_SUITE)
def test_onnx_fp16_loads_runs_and_agrees_within_fp16_error(zoo, name):
  figures = _figures(zoo[name], "FP16")
  assert figures["top1_agreement"] >= 0.99 and figures["max_abs_error"] <= 0.05, figures


@pytest.mark.parametrize("name", TOKEN_MODELS)
def test_fp16_keeps_token_casts_and_their_comparisons_fp32(zoo, name):
  """tf2onnx compares int token ids in float (Keras 3 Embedding's negative-index check; while-loop counters):
  in FP16 they would round above 2048, and onnxconverter-common alone made a model ONNX Runtime refused."""
  import onnx  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import fp16_graph as onnx_fp16_graph  # pylint: disable=g-import-not-at-top
  entry = zoo[name]
  kept = entry["built"]["FP16"][1]["kept_fp32"]
  assert "integer casts" in kept, kept
  fp16 = _graph(entry, "FP16")
  token = entry["zoo"].input_name
  casts = [n for g in onnx_fp16_graph.graphs(fp16.graph) for n in g.node if n.op_type == "Cast" and token in n.input]
  assert casts and all(a.i == onnx.TensorProto.FLOAT for n in casts for a in n.attribute if a.name == "to"), casts
  with open(os.path.join(entry["built"]["FP16"][0], "model.json"), encoding="utf-8") as f:
    assert "integer casts" in json.load(f)["fp16"]["kept_fp32"]


@pytest.mark.parametrize("name", TOKEN_MODELS)
def test_int8_of_sequence_models_quantizes_matmuls_and_leaves_token_inputs_and_recurrence_alone(zoo, name):
  entry = zoo[name]
  details = entry["built"]["INT8"][1]
  assert set(details["quantized_ops"]) == {"MatMul"}, details["quantized_ops"]
  int8 = _graph(entry, "INT8")
  token = entry["zoo"].input_name
  (graph_input,) = [v for v in int8.graph.input if v.name == token]
  assert graph_input.type.tensor_type.elem_type == _graph(entry, "FP32").graph.input[0].type.tensor_type.elem_type
  assert not [n for n in int8.graph.node if n.op_type == "QuantizeLinear" and token in n.input]
  recurrent = {"LSTM", "GRU", "RNN", "Loop", "Scan"}
  fp32_ops = {n.op_type for n in _graph(entry, "FP32").graph.node} & recurrent
  assert fp32_ops <= {n.op_type for n in int8.graph.node}, "recurrent ops are left as tf2onnx wrote them"
  figures = _figures(entry, "INT8")
  assert figures["top1_agreement"] >= 0.95, figures


def test_exact_gelu_of_the_transformer_block_is_written_with_erf(zoo):
  ops = {n.op_type for n in _graph(zoo["TransformerBlock"], "FP32").graph.node}
  assert "Erf" in ops and "Erfc" not in ops, ops


def test_transformer_block_through_trtexport_builds_every_onnx_variant_quietly(tmp_path, capfd):
  """The worker route a user takes: fit with TrtExport; every ONNX variant built and verified (none `failed`),
  and nothing from tf2onnx, onnxconverter-common or ONNX Runtime on the trainer's console (worker.log has it)."""
  if _MISSING:
    pytest.skip(_MISSING)
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  from tests import keras_models  # pylint: disable=g-import-not-at-top
  keras = keras_models.keras_for(keras_models.flavors()[0])
  keras.utils.set_random_seed(0)
  name = "TransformerBlock"
  architecture, _ = zoo_models.ARCHITECTURES[name]
  model = zoo_models.build(keras, name)
  (train_images, y_train), (val_images, y_val) = zoo_models.digits_split()
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=("onnx",), precisions=("FP32", "FP16", "INT8"),
                                   blocking=True, verbose=1)
  model.fit(zoo_models.inputs_for(architecture, train_images), y_train, epochs=1, batch_size=32, verbose=0,
            validation_data=(zoo_models.inputs_for(architecture, val_images), y_val), callbacks=[callback])
  with open(callback.manifest_paths[-1], encoding="utf-8") as f:
    artifacts = json.load(f)["artifacts"]
  statuses = {k: artifacts[k]["status"] for k in ("onnx_fp32", "onnx_fp16", "onnx_int8")}
  assert "failed" not in statuses.values(), {k: artifacts[k].get("reason") for k in statuses}
  assert statuses["onnx_fp32"] == "ok", artifacts["onnx_fp32"]
  printed = capfd.readouterr()
  noisy = [line for line in (printed.out + printed.err).splitlines()
           if any(word in line for word in ("tf2onnx", "onnxruntime", "onnxconverter", "Traceback"))]
  assert noisy == []

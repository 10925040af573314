"""`unverified` on real exports: built and build checks passed, but no comparison vouches for it, and the manifest
and report say why (verification off, no held-out samples, too few to tell, nothing here can run it, outputs
of the normal export that do not vary); and `ok` where a comparison did vouch for it."""

import dataclasses
import os

import numpy as np
import pytest

from tests import saved_models
from tftrt_keras import formats as formats_lib
from tftrt_keras.formats.base import RunnerUnavailable
from tftrt_keras.formats.onnx.format import OnnxFormat
from tftrt_keras.offline.export import export_saved_model
from tftrt_keras.options import ConversionOptions

pytestmark = pytest.mark.tf

QUICK = ConversionOptions(formats=("onnx",), precisions=("FP32", "FP16"), verify_timed_runs=2, verify_warmup_runs=0)
TOO_FEW = ("too few verification samples to tell: top-1 agreement 1 on 16 samples, 95% bounds [0.8554, 1] around "
           "the gate 0.97 (raise verification_samples or give more validation data)")
NOT_VARYING = "the model's outputs do not vary enough over the held-out samples to judge"
ONE_CLASS = "top-1 agreement cannot judge: the normal export gives one class nearly everywhere"


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  """Three offline exports of one small real classifier into one root, each through its worker process: with 64
  samples (16 held out), the same with verify=False, and without samples."""
  base = tmp_path_factory.mktemp("unverified")
  saved_models.classifier(base / "classifier", seed=1)
  np.savez(base / "samples.npz", **saved_models.samples(64, seed=3))
  root = base / "exports"
  judged = export_saved_model(str(base / "classifier"), str(root), calibration_data=str(base / "samples.npz"),
                              options=QUICK)
  off = export_saved_model(str(base / "classifier"), str(root), calibration_data=str(base / "samples.npz"),
                           options=dataclasses.replace(QUICK, verify=False))
  without_samples = export_saved_model(str(base / "classifier"), str(root), options=QUICK)
  return root, judged, off, without_samples


def _statuses(manifest):
  return {name: entry["status"] for name, entry in manifest["artifacts"].items()}


def test_too_few_samples_leave_an_fp16_classifier_unverified_and_fp32_verified(exports):
  root, judged, _, _ = exports
  assert _statuses(judged) == {"native": "ok", "frozen": "ok", "calibration": "ok", "onnx_fp32": "ok",
                               "onnx_fp16": "unverified"}
  assert "reason" not in judged["artifacts"]["onnx_fp32"] and "reason" not in judged["artifacts"]["frozen"]
  fp16 = judged["artifacts"]["onnx_fp16"]
  assert fp16["reason"] == f"output `logits`: {TOO_FEW}; output `probabilities`: {TOO_FEW}"
  assert fp16["verification"]["verdict"] == "unverified" and fp16["verification"]["samples"] == 16
  assert fp16["verification"]["outputs"]["probabilities"]["max_relative_error"] < 1e-2  # it is fine, just unproven
  assert judged["verification"]["unverified"] == ["onnx_fp16"] and "onnx_fp16" in judged["verification"]["servable"]
  report = (root / "manifests" / "1" / "report.md").read_text()
  assert "| onnx_fp16 | unverified |" in report and f"- onnx_fp16: unverified: {fp16['reason']}" in report


def test_verify_false_leaves_every_built_artifact_unverified_saying_so(exports):
  root, _, off, _ = exports
  assert _statuses(off) == {"native": "ok", "frozen": "unverified", "calibration": "ok", "onnx_fp32": "unverified",
                            "onnx_fp16": "unverified"}
  for name in ("frozen", "onnx_fp32", "onnx_fp16"):
    entry = off["artifacts"][name]
    assert entry["reason"] == "verification turned off (verify=False)" and "verification" not in entry
    assert os.path.isfile(root / name / "2" / ("frozen_graph.pb" if name == "frozen" else "model.onnx"))  # built
  assert off["verification"]["skipped"] == "verification turned off (verify=False)"
  assert off["verification"]["unverified"] == ["frozen", "onnx_fp32", "onnx_fp16"]
  assert not (root / "manifests" / "2" / "report.md").exists()


def test_without_held_out_samples_built_artifacts_are_unverified_saying_so(exports):
  _, _, _, without_samples = exports
  assert without_samples["artifacts"]["calibration"]["status"] == "skipped"
  for name in ("frozen", "onnx_fp32", "onnx_fp16"):
    entry = without_samples["artifacts"][name]
    assert entry["status"] == "unverified" and entry["reason"].startswith("no held-out samples: "), entry


# --- a format whose variants nothing here can run -----------------------------------------------------------------

class OnnxFormatWithNoRunnerHere(OnnxFormat):
  """The real ONNX format, built as usual, whose runner cannot run on this machine: what a format of engines for a
  GPU this machine lacks (TensorRT-RTX's) does in `open_runner`."""

  MESSAGE = "the engine targets GPUs of compute capability 8.6, 8.9 or 12.0 and this machine has none"

  def open_runner(self, path, job):
    raise RunnerUnavailable(self.MESSAGE)


def test_a_variant_nothing_here_can_run_is_unverified_with_the_formats_words(tmp_path):
  """In-process: `prepare_export` and `run_export` build and verify onnx_fp32 (`ok`); verifying the same export
  again with the format above records it `unverified`, the runner's message as the reason."""
  from tftrt_keras.pipeline import prepare, run as export_run  # pylint: disable=g-import-not-at-top
  from tftrt_keras.samples import calibration_data  # pylint: disable=g-import-not-at-top
  from tftrt_keras.verify import verification  # pylint: disable=g-import-not-at-top
  saved_models.classifier(tmp_path / "model", seed=1)
  request = prepare.prepare_export(
      str(tmp_path / "out"), 1, {"kind": "test"}, dataclasses.replace(QUICK, precisions=("FP32",)),
      write_native=saved_models.writer_copying(tmp_path / "model"),
      batches=calibration_data.batches(saved_models.samples(64), 8))
  assert export_run.run_export(request)["artifacts"]["onnx_fp32"]["status"] == "ok"
  no_runner = OnnxFormatWithNoRunnerHere()
  run = export_run.ExportRun(request)
  summary = verification.verify_export(
      run, load_format=lambda name: no_runner if name == "onnx" else formats_lib.load_format(name))
  entry = run.manifest["artifacts"]["onnx_fp32"]
  assert entry["status"] == "unverified" and entry["reason"] == OnnxFormatWithNoRunnerHere.MESSAGE
  assert entry["verification"] == {"runner_unavailable": OnnxFormatWithNoRunnerHere.MESSAGE}
  assert run.manifest["artifacts"]["frozen"]["status"] == "ok"  # verified again, by its own runner
  assert summary["unverified"] == ["onnx_fp32"] and "onnx_fp32" in summary["servable"]
  report = (tmp_path / "out" / "manifests" / "1" / "report.md").read_text()
  assert f"- onnx_fp32: unverified: {OnnxFormatWithNoRunnerHere.MESSAGE}" in report
  assert "| onnx_fp32 | unverified | not run | not run | not run |" in report


# --- outputs that do not vary -------------------------------------------------------------------------------------

def _export_images(saved_model_dir, images, root):
  return export_saved_model(str(saved_model_dir), str(root), calibration_data={"image": images},
                            options=dataclasses.replace(QUICK, precisions=("FP32",)))


def test_an_untrained_mobilenet_gives_every_sample_the_same_scores_and_is_not_judged(tmp_path):
  """keras.applications.MobileNetV2(weights=None) at 32x32: BatchNorm statistics at their initial values give
  every image ~0.1 for each class; FP32 and the frozen graph "agree" within 1e-6, and say nothing by it."""
  from tests import int8_models, onnx_models  # pylint: disable=g-import-not-at-top
  keras = onnx_models.primary_keras()
  image = keras.Input((32, 32, 3), name="image")
  model = keras.applications.MobileNetV2(weights=None, input_tensor=image, classes=10)
  onnx_models.save_keras_model(model, tmp_path / "mobilenet")
  (_, _), (images, _) = int8_models.digits_32()
  manifest = _export_images(tmp_path / "mobilenet", images[:96], tmp_path / "out")  # 24 held out
  summary = manifest["verification"]
  (output,) = summary["outputs_not_varying"]
  variation = manifest["artifacts"]["native"]["verification"]["output_variation"][output]
  assert variation["top1_share"] == 1.0 and variation["samples"] == 24 and variation["relative_spread"] < 1e-3
  for name in ("frozen", "onnx_fp32"):
    entry = manifest["artifacts"][name]
    assert entry["status"] == "unverified", entry
    assert entry["reason"] == f"{NOT_VARYING} (output `{output}`: {summary['outputs_not_varying'][output]})"
    assert entry["reason"].startswith(f"{NOT_VARYING} (output `{output}`: spread across samples ")
    assert entry["verification"]["outputs"][output]["max_relative_error"] < 1e-3  # "agrees", proving nothing
  assert summary["unverified"] == ["frozen", "onnx_fp32"]


def test_a_small_trained_cnn_varies_and_is_verified(tmp_path):
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  saved_model_dir, images = onnx_models.digits_saved_model(tmp_path / "digits")
  manifest = _export_images(saved_model_dir, images[:96], tmp_path / "out")
  assert "outputs_not_varying" not in manifest["verification"]
  for name in ("frozen", "onnx_fp32"):
    assert manifest["artifacts"][name]["status"] == "ok", manifest["artifacts"][name]
  (variation,) = manifest["artifacts"]["native"]["verification"]["output_variation"].values()
  assert variation["top1_share"] < 0.5 and variation["relative_spread"] > 0.1


def test_one_class_for_every_sample_leaves_only_the_top1_verdicts_unverified(tmp_path):
  """A barely trained, heavily imbalanced classifier (one step on labels that are all class 0, its bias favouring
  class 0): every held-out sample gets class 0, its probabilities vary. The frozen graph and FP32 are vouched for by
  their error on those varying values (`ok`); FP16's top-1 agreement, which any artifact leaning to class 0 would
  reach, cannot judge: `unverified`, saying so, although its bounds clear the gate."""
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  keras = onnx_models.primary_keras()
  inputs = keras.Input((4,), name="x")
  hidden = keras.layers.Dense(16, activation="relu")(inputs)
  outputs = keras.layers.Dense(3, activation="softmax", name="probabilities",
                               bias_initializer=keras.initializers.Constant([6.0, 0.0, 0.0]))(hidden)
  model = keras.Model(inputs, outputs)
  model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
  x = np.random.default_rng(0).normal(size=(480, 4)).astype("float32")
  model.fit(x[:32], np.zeros(32, "int32"), epochs=1, batch_size=32, verbose=0)
  onnx_models.save_keras_model(model, tmp_path / "imbalanced")
  manifest = export_saved_model(str(tmp_path / "imbalanced"), str(tmp_path / "out"), calibration_data={"x": x},
                                options=dataclasses.replace(QUICK, verification_samples=160))
  summary, artifacts = manifest["verification"], manifest["artifacts"]
  assert summary["samples"] >= 120, summary
  variation = artifacts["native"]["verification"]["output_variation"]["probabilities"]
  assert variation["top1_share"] == 1.0 and variation["relative_spread"] > 1e-3, variation  # one class, varying
  assert summary["outputs_one_class"] == {"probabilities": f"top-1 class 0 for {summary['samples']} of "
                                                           f"{summary['samples']} samples"}
  assert "outputs_not_varying" not in summary
  for name in ("frozen", "onnx_fp32"):
    assert artifacts[name]["status"] == "ok", artifacts[name]
  fp16 = artifacts["onnx_fp16"]
  figures = fp16["verification"]["outputs"]["probabilities"]
  assert figures["top1_agreement_lower_bound"] >= fp16["verification"]["thresholds"]["min_agreement"]
  assert figures["max_relative_error"] <= fp16["verification"]["thresholds"]["classifier_max_relative_error"]
  assert fp16["status"] == "unverified"
  assert fp16["reason"] == f"{ONE_CLASS} (output `probabilities`: {summary['outputs_one_class']['probabilities']})"
  assert summary["unverified"] == ["onnx_fp16"]
  report = (tmp_path / "out" / "manifests" / "1" / "report.md").read_text()
  assert "top-1 agreement cannot judge FP16/INT8 variants on it" in report

"""One export end to end: prepare (training side), run (worker side), manifest and layout on disk.

Tests that convert "successfully" use the TEST DOUBLE `tests.fake_trt_backend.FakeTrtBackendForTests` (TF-TRT
cannot run here); they say so. The others run the real `TfTrtBackend`: where TF-TRT runs, its variants are `ok`
with engines counted; where it does not (here), `skipped` with the preflight's reason. Both are asserted.
"""

import datetime
import os

import numpy as np
import pytest
import tensorflow as tf

from tests import saved_models
from tftrt_keras.pipeline import prepare
from tftrt_keras.pipeline import run as export_run
from tftrt_keras.samples import holdout
from tftrt_keras.options import ConversionOptions
from tftrt_keras.artifacts.layout import ExportLayout
from tftrt_keras.pipeline.worker import ConversionWorker
from tftrt_keras.formats import load_format
from tftrt_keras.formats.tftrt.format import tensorflow_has_tftrt
from tftrt_keras.artifacts.manifest import FINAL_STATUSES, read_manifest




def _options(**kwargs):
  """Only the TF-TRT format: this file tests the pipeline around it (the other formats have their own tests)."""
  return ConversionOptions(formats=("tftrt",), **kwargs)


def _prepare(root, options, batches=None, model=saved_models.classifier, version=1):
  return prepare.prepare_export(str(root), version, {"kind": "test"}, options,
                                 write_native=lambda d: model(d), batches=batches)


@pytest.fixture(scope="module")
def tftrt_export(tmp_path_factory):
  """Real backend, in-process: FP16 and INT8 requested, one captured batch of 8 samples."""
  root = tmp_path_factory.mktemp("tftrt_export") / "exports"
  batch = saved_models.samples(8, seed=5)
  request = _prepare(root, _options(precisions=("INT8", "FP16")), batches=[batch])
  manifest = export_run.run_export(request)
  return root, batch, manifest


@pytest.mark.unit
def test_split_holdout_never_shares_a_sample():
  batches = [{"x": np.arange(4 * i, 4 * i + 4).reshape(4, 1)} for i in range(8)]
  calibration, verification, note = holdout.split_holdout(batches, verification_samples=500)
  calibrated = np.concatenate([b["x"] for b in calibration]).ravel().tolist()
  verified = np.concatenate([b["x"] for b in verification]).ravel().tolist()
  assert (len(calibrated), len(verified)) == (24, 8) and not set(calibrated) & set(verified)
  assert sorted(calibrated + verified) == list(range(32))
  assert {len(b["x"]) for b in calibration} == {4}  # the captured batch size is kept
  assert note.startswith("of 32 captured samples, 24 calibrate and 8 verify")
  assert holdout.split_holdout([{"x": np.zeros((1, 1))}], 500)[1] == []
  assert holdout.split_holdout([], 500) == ([], [], None)


@pytest.mark.tf
def test_manifest_fields(tftrt_export):
  root, _, manifest = tftrt_export
  assert manifest == read_manifest(ExportLayout(root).manifest_dir(1))  # what is returned is what is on disk
  assert manifest["version"] == 1 and isinstance(manifest["version"], int)
  created = datetime.datetime.fromisoformat(manifest["created"])
  assert created.tzinfo is not None
  assert manifest["source"] == {"kind": "test"}
  environment = manifest["environment"]
  assert environment["tensorflow"] == tf.__version__
  if tensorflow_has_tftrt():  # the TF-TRT preflight's facts, free GPU memory (or "unknown" and why) included
    assert {"tensorrt_linked", "tensorrt_loaded", "gpu", "gpu_memory"} <= set(environment["formats"]["tftrt"])
  else:
    assert environment["formats"]["tftrt"] == {}
  # Only what was asked for, in order.
  assert list(manifest["artifacts"]) == ["native", "frozen", "calibration", "tftrt_fp16", "tftrt_int8"]
  assert all(entry["status"] in FINAL_STATUSES for entry in manifest["artifacts"].values())


@pytest.mark.tf
def test_paths_are_relative_to_the_manifest_and_point_at_the_layout(tftrt_export):
  root, _, manifest = tftrt_export
  layout = ExportLayout(root)
  artifacts = manifest["artifacts"]
  for name in ("native", "frozen", "calibration"):
    assert artifacts[name]["status"] == "ok", artifacts[name]
    assert not os.path.isabs(artifacts[name]["path"])
    assert layout.resolve(1, artifacts[name]["path"]) == layout.path(name, 1)
  assert os.path.isfile(os.path.join(root, "1", "saved_model.pb"))  # TF Serving base path = root
  assert os.path.isfile(os.path.join(root, "frozen", "1", "frozen_graph.pb"))
  assert not [n for n in os.listdir(root) if n.startswith(".tmp")]


@pytest.mark.tf
def test_frozen_entry_lists_tensor_names(tftrt_export):
  _, _, manifest = tftrt_export
  frozen = manifest["artifacts"]["frozen"]
  assert frozen["inputs"] == ["x:0"]
  assert len(frozen["outputs"]) == 2 and all(name.endswith(":0") for name in frozen["outputs"])


@pytest.mark.tf
def test_calibration_npz_one_array_per_input_samples_on_axis_0(tftrt_export):
  root, batch, manifest = tftrt_export
  entry = manifest["artifacts"]["calibration"]
  directory = ExportLayout(root).resolve(1, entry["path"])
  with np.load(os.path.join(directory, entry["file"]), allow_pickle=False) as data:
    assert data.files == ["x"]
    calibration = data["x"]
  with np.load(os.path.join(directory, entry["verification_file"]), allow_pickle=False) as data:
    verification = data["x"]
  # A quarter of the single captured batch of 8 is held out at random: the two never share a sample.
  assert calibration.shape == (6, 4) and verification.shape == (2, 4) and entry["samples"] == 6
  together = np.concatenate([calibration, verification])
  np.testing.assert_array_equal(together[np.lexsort(together.T)], batch["x"][np.lexsort(batch["x"].T)])


@pytest.mark.tf
def test_tftrt_variants_are_built_with_engines_or_skipped_with_the_preflight_reason(tftrt_export):
  root, _, manifest = tftrt_export
  reason = load_format("tftrt").unavailable_reason(_options())  # the preflight's, or "no TF-TRT in TF 2.18+"
  for name in ("tftrt_fp16", "tftrt_int8"):
    entry = manifest["artifacts"][name]
    if reason is None:  # TF-TRT runs here: a variant only with engines counted (see also test_trt_tier.py)
      assert entry["status"] in ("ok", "rejected"), entry
      assert entry["conversion"]["trt_engine_ops"] >= 1 and entry["engines_serialized"] >= 1
      assert entry["engines_prebuilt_for"] and os.path.isdir(os.path.join(root, name, "1", "assets"))
    else:
      assert entry == {"status": "skipped", "path": None, "reason": reason}
      assert not os.path.exists(os.path.join(root, name))


@pytest.mark.tf
def test_lookup_table_model_gets_a_frozen_graph_and_says_why_it_has_no_split(tmp_path):
  request = _prepare(tmp_path / "exports", _options(precisions=("FP32",)), model=saved_models.lookup_table)
  manifest = export_run.run_export(request)
  frozen = manifest["artifacts"]["frozen"]
  # The table's contents are frozen into the graph; without samples nothing compared it.
  assert frozen["status"] == "unverified" and frozen["path"] == "../../frozen/1", frozen
  assert manifest["artifacts"]["native"]["status"] == "ok"
  assert manifest["artifacts"]["calibration"]["status"] == "skipped"
  # Its only output is the lookup's own result: no numeric rest to hand to ONNX, and the manifest says so.
  assert manifest["split"]["refused"].startswith("only pass-throughs follow the string/lookup part")
  assert "front" not in manifest["artifacts"]


@pytest.mark.tf
def test_worker_in_background_produces_a_variant_that_serves(tmp_path, monkeypatch, fake_tftrt):
  """Uses the TEST DOUBLE FakeTrtBackendForTests: the worker child process converts "FP32" with it."""
  root = tmp_path / "exports"
  request = _prepare(root, _options(precisions=("FP32",), conversion_device="cpu"))
  monkeypatch.delenv("FAKE_TRT_CRASH", raising=False)
  job = ConversionWorker(request)
  assert job.pid != os.getpid()
  manifest = job.wait(timeout=300)
  assert job.done() and job.returncode == 0
  entry = manifest["artifacts"]["tftrt_fp32"]
  # Built and build-checked; without samples nothing compared it with the normal export, and it says so.
  assert entry["status"] == "unverified" and entry["reason"].startswith("no held-out samples"), entry
  # Without samples the engines were prebuilt from the signature, for batch 1 (the test double's report).
  assert entry["engines_prebuilt_for"] == [1] and entry["engines_serialized"] == 1
  # The worker ran on the device it was given: no GPU at all for "cpu".
  assert manifest["environment"]["formats"]["tftrt"]["cuda_visible_devices"] == "-1"
  variant = tf.saved_model.load(ExportLayout(root).resolve(1, entry["path"]))
  x = saved_models.samples(3, seed=9)["x"]
  out = variant.signatures["serving_default"](x=tf.constant(x))
  np.testing.assert_allclose(out["logits"].numpy(), saved_models.classifier(tmp_path / "ref")(x)["logits"],
                             rtol=1e-5, atol=1e-5)


@pytest.mark.tf
def test_a_programming_error_in_a_build_is_reported_as_a_bug_with_its_traceback_in_worker_log(tmp_path, monkeypatch,
                                                                                             fake_tftrt):
  """Uses the TEST DOUBLE FakeTrtBackendForTests, told to raise TypeError for FP16 and RuntimeError for FP32."""
  root = tmp_path / "exports"
  request = _prepare(root, _options(precisions=("FP32", "FP16"), conversion_device="cpu"))
  monkeypatch.setenv("FAKE_TRT_FAIL", "FP32,FP16")
  monkeypatch.setenv("FAKE_TRT_FAIL_AS", "FP16:TypeError")
  manifest = ConversionWorker(request).wait(timeout=300)
  bug, routine = manifest["artifacts"]["tftrt_fp16"], manifest["artifacts"]["tftrt_fp32"]
  assert bug["status"] == routine["status"] == "failed", manifest["artifacts"]
  assert bug["reason"] == ("internal error (a bug in tftrt_keras, please report): "
                           "TypeError: FakeTrtBackendForTests: injected failure for FP16"), bug
  assert routine["reason"] == "RuntimeError: FakeTrtBackendForTests: injected failure for FP32", routine
  with open(root / "manifests" / "1" / "worker.log", errors="replace") as f:
    log = f.read()
  assert "Traceback (most recent call last)" in log and "TypeError: FakeTrtBackendForTests" in log, log[-3000:]


@pytest.mark.tf
def test_worker_killed_by_sigsegv_is_recorded_as_failed_with_how_it_died(tmp_path, monkeypatch, fake_tftrt):
  """Uses the TEST DOUBLE FakeTrtBackendForTests, told to crash the worker (SIGSEGV) mid-write."""
  root = tmp_path / "exports"
  request = _prepare(root, _options(precisions=("FP16",)))
  monkeypatch.setenv("FAKE_TRT_CRASH", "SIGSEGV")
  manifest = ConversionWorker(request).wait(timeout=300)
  entry = manifest["artifacts"]["tftrt_fp16"]
  assert entry["status"] == "failed"
  assert "killed by SIGSEGV" in entry["reason"] and "tftrt_fp16" in entry["reason"]
  # Finished work before the crash is kept, and it never reached verification: unverified, never ok.
  assert manifest["artifacts"]["frozen"]["status"] == "unverified"
  assert manifest["artifacts"]["frozen"]["reason"] == "built and build-checked; not verified yet"
  assert os.path.isfile(root / "frozen" / "1" / "frozen_graph.pb")
  base = root / "tftrt_fp16"
  assert not base.exists() or os.listdir(base) == []  # the half-written variant is gone


@pytest.mark.tf
def test_worker_sees_only_its_conversion_device_counted_among_the_trainers_gpus(tmp_path, monkeypatch, fake_tftrt):
  """TEST DOUBLE backend; the device choice is real: CUDA_VISIBLE_DEVICES in a real worker process."""
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
  request = _prepare(tmp_path / "exports",
                     _options(precisions=("FP32",), conversion_device="gpu:1"))
  manifest = ConversionWorker(request).wait(timeout=300)
  assert manifest["environment"]["formats"]["tftrt"]["cuda_visible_devices"] == "7"
  assert manifest["environment"]["formats"]["tftrt"]["conversion_device"] == "gpu:1"


@pytest.mark.tf
def test_worker_given_a_gpu_the_trainer_cannot_see_fails_the_export_saying_so(tmp_path, monkeypatch, fake_tftrt):
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
  request = _prepare(tmp_path / "exports", _options(precisions=("FP32",),
                                                    conversion_device="gpu:1"))
  manifest = ConversionWorker(request).wait(timeout=300)
  for name in ("frozen", "tftrt_fp32"):
    entry = manifest["artifacts"][name]
    assert entry["status"] == "failed" and "conversion_device='gpu:1', but the training process sees only 1 GPU" in (
        entry["reason"]), entry
  assert manifest["artifacts"]["native"]["status"] == "ok"

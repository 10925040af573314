"""One export end to end: prepare (training side), run (worker side), manifest and layout on disk.

Tests that convert "successfully" use the TEST DOUBLE `tests.fake_trt_backend.FakeTrtBackendForTests` (TF-TRT
cannot run here); they say so. The others run the real `TfTrtBackend`, which records every TF-TRT variant as
skipped with the preflight's reason on this machine.
"""

import datetime
import os

import numpy as np
import pytest
import tensorflow as tf

from tests import saved_models
from tests.saved_models import FAKE_BACKEND
from tftrt_keras import pipeline
from tftrt_keras.conversion_options import ConversionOptions
from tftrt_keras.export_layout import ExportLayout
from tftrt_keras.export_worker import ExportJob
from tftrt_keras.manifest import FINAL_STATUSES, read_manifest
from tftrt_keras.trt_convert import TfTrtBackend


def _prepare(root, options, batches=None, model=saved_models.classifier, version=1):
  return pipeline.prepare_export(str(root), version, {"kind": "test"}, options,
                                 write_native=lambda d: model(d), batches=batches)


@pytest.fixture(scope="module")
def tftrt_export(tmp_path_factory):
  """Real backend, in-process: FP16 and INT8 requested, one captured batch of 8 samples."""
  root = tmp_path_factory.mktemp("tftrt_export") / "exports"
  batch = saved_models.samples(8, seed=5)
  request = _prepare(root, ConversionOptions(precisions=("INT8", "FP16")), batches=[batch])
  manifest = pipeline.run_export(request, backend=TfTrtBackend())
  return root, batch, manifest


@pytest.mark.unit
def test_split_holdout_never_shares_a_sample():
  batches = [{"x": np.full((4, 1), i)} for i in range(8)]
  calibration, verification = pipeline.split_holdout(batches)
  assert (len(calibration), len(verification)) == (6, 2)
  single = {"x": np.arange(6).reshape(6, 1)}
  calibration, verification = pipeline.split_holdout([single])
  assert calibration[0]["x"].ravel().tolist() == [0, 1, 2] and verification[0]["x"].ravel().tolist() == [3, 4, 5]
  assert pipeline.split_holdout([{"x": np.zeros((1, 1))}])[1] == []
  assert pipeline.split_holdout([]) == ([], [])


@pytest.mark.unit
def test_engines_are_prebuilt_for_batch_1_each_captured_size_and_max_batch_size():
  calibration = [{"x": np.zeros((8, 4))}, {"x": np.zeros((3, 4))}]
  sizes = [len(b["x"]) for b in pipeline._build_batches(calibration, max_batch_size=16)]  # pylint: disable=protected-access
  assert sizes == [1, 3, 8, 16]
  sizes = [len(b["x"]) for b in pipeline._build_batches(calibration, max_batch_size=4)]  # pylint: disable=protected-access
  assert sizes == [1, 3, 4]
  assert pipeline._build_batches([], 8) == []  # pylint: disable=protected-access


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
  assert {"tensorflow", "tensorrt_linked", "tensorrt_loaded", "gpu"} <= set(environment)
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
  # The single captured batch of 8 is split in half: calibration and verification never share a sample.
  assert calibration.shape == (4, 4) and verification.shape == (4, 4) and entry["samples"] == 4
  np.testing.assert_array_equal(np.concatenate([calibration, verification]), batch["x"])


@pytest.mark.tf
def test_tftrt_variants_are_skipped_with_the_preflight_reason(tftrt_export):
  root, _, manifest = tftrt_export
  reason = TfTrtBackend().unavailable_reason()
  if reason is None:
    pytest.skip("TF-TRT is usable here: the variants are built (see test_trt_tier.py)")
  for name in ("tftrt_fp16", "tftrt_int8"):
    assert manifest["artifacts"][name] == {"status": "skipped", "path": None, "reason": reason}
    assert not os.path.exists(os.path.join(root, name))


@pytest.mark.tf
def test_lookup_table_model_records_frozen_as_skipped_with_the_reason(tmp_path):
  request = _prepare(tmp_path / "exports", ConversionOptions(precisions=("FP32",)),
                     model=saved_models.lookup_table)
  manifest = pipeline.run_export(request, backend=TfTrtBackend())
  frozen = manifest["artifacts"]["frozen"]
  assert frozen["status"] == "skipped" and frozen["path"] is None
  assert "lookup table" in frozen["reason"]
  assert manifest["artifacts"]["native"]["status"] == "ok"
  assert manifest["artifacts"]["calibration"]["status"] == "skipped"
  assert not os.path.exists(tmp_path / "exports" / "frozen" / "1")


@pytest.mark.tf
def test_worker_in_background_produces_a_variant_that_serves(tmp_path, monkeypatch):
  """Uses the TEST DOUBLE FakeTrtBackendForTests: the worker child process converts "FP32" with it."""
  root = tmp_path / "exports"
  request = _prepare(root, ConversionOptions(precisions=("FP32",), backend=FAKE_BACKEND))
  monkeypatch.delenv("FAKE_TRT_CRASH", raising=False)
  job = ExportJob(request)
  assert job.pid != os.getpid()
  manifest = job.wait(timeout=300)
  assert job.done() and job.returncode == 0
  entry = manifest["artifacts"]["tftrt_fp32"]
  assert entry["status"] == "ok", entry
  variant = tf.saved_model.load(ExportLayout(root).resolve(1, entry["path"]))
  x = saved_models.samples(3, seed=9)["x"]
  out = variant.signatures["serving_default"](x=tf.constant(x))
  np.testing.assert_allclose(out["logits"].numpy(), saved_models.classifier(tmp_path / "ref")(x)["logits"],
                             rtol=1e-5, atol=1e-5)


@pytest.mark.tf
def test_worker_killed_by_sigsegv_is_recorded_as_failed_with_how_it_died(tmp_path, monkeypatch):
  """Uses the TEST DOUBLE FakeTrtBackendForTests, told to crash the worker (SIGSEGV) mid-write."""
  root = tmp_path / "exports"
  request = _prepare(root, ConversionOptions(precisions=("FP16",), backend=FAKE_BACKEND))
  monkeypatch.setenv("FAKE_TRT_CRASH", "SIGSEGV")
  manifest = ExportJob(request).wait(timeout=300)
  entry = manifest["artifacts"]["tftrt_fp16"]
  assert entry["status"] == "failed"
  assert "killed by SIGSEGV" in entry["reason"] and "tftrt_fp16" in entry["reason"]
  assert manifest["artifacts"]["frozen"]["status"] == "ok"  # finished work before the crash is kept
  base = root / "tftrt_fp16"
  assert not base.exists() or os.listdir(base) == []  # the half-written variant is gone

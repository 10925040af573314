"""Every checkpoint gets its frozen graph; only variants may be superseded, and only under "latest".

Real worker processes; the variants come from the TEST DOUBLE FakeTrtBackendForTests (selected by `backend`),
held mid-write by FAKE_TRT_RELEASE_FILE so that later exports queue behind the first.
"""


import pytest

from tests import saved_models
from tftrt_keras.formats.tftrt.backend import CONVERTER_VARIABLE
from tftrt_keras.pipeline import prepare
from tftrt_keras.options import ConversionOptions
from tftrt_keras.pipeline.scheduler import ExportScheduler


def _run_three_exports(tmp_path, monkeypatch, policy):
  saved_models.classifier(tmp_path / "model")
  release = tmp_path / "release"
  monkeypatch.setenv("FAKE_TRT_RELEASE_FILE", str(release))
  monkeypatch.setenv(CONVERTER_VARIABLE, saved_models.FAKE_BACKEND)
  options = ConversionOptions(formats=("tftrt",), precisions=("FP32",),
                              conversion_policy=policy, verify_timed_runs=1, verify_warmup_runs=0)

  write_native = saved_models.writer_copying(tmp_path / "model")
  scheduler = ExportScheduler()
  samples = saved_models.samples(16)
  for version in (1, 2, 3):
    scheduler.submit(prepare.prepare_export(str(tmp_path / "out"), version, {"kind": "test"}, options,
                                             write_native=write_native, batches=[samples]))
  release.write_text("go")  # the first worker was held mid-write until all three were due
  manifests = {m["version"]: m for m in scheduler.wait_all(timeout=300)}
  assert sorted(manifests) == [1, 2, 3]
  return manifests


@pytest.mark.tf
@pytest.mark.slow
def test_latest_policy_supersedes_only_the_variants_of_a_waiting_export(tmp_path, monkeypatch):
  manifests = _run_three_exports(tmp_path, monkeypatch, "latest")
  for version in (1, 3):
    assert manifests[version]["artifacts"]["tftrt_fp32"]["status"] == "ok"
  middle = manifests[2]["artifacts"]
  assert middle["tftrt_fp32"]["status"] == "skipped"
  assert middle["tftrt_fp32"]["reason"].startswith("superseded: export version 3 was due")
  assert "conversion_policy='latest'" in middle["tftrt_fp32"]["reason"]
  # Freezing needs no TensorRT: the superseded export still gets its frozen graph, verified.
  assert middle["frozen"]["status"] == "ok" and middle["frozen"]["verification"]["passed"] is True
  assert (tmp_path / "out" / "frozen" / "2" / "frozen_graph.pb").is_file()
  assert not (tmp_path / "out" / "tftrt_fp32" / "2").exists()


@pytest.mark.tf
@pytest.mark.slow
def test_every_policy_converts_every_export_in_turn(tmp_path, monkeypatch):
  manifests = _run_three_exports(tmp_path, monkeypatch, "every")
  for version in (1, 2, 3):
    assert manifests[version]["artifacts"]["tftrt_fp32"]["status"] == "ok", manifests[version]["artifacts"]
    assert (tmp_path / "out" / "tftrt_fp32" / str(version) / "saved_model.pb").is_file()

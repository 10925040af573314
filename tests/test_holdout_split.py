"""How captured samples are split into calibration and verification, and what the manifest says about it."""

import numpy as np
import pytest

from tftrt_keras.pipeline import prepare
from tftrt_keras.samples import holdout


def _batches(total, batch):
  values = np.arange(total, dtype=np.float32)[:, None]
  return [{"x": values[s:s + batch]} for s in range(0, total, batch)]


@pytest.mark.unit
def test_held_out_samples_are_spread_over_the_whole_pass_and_never_calibrate():
  calibration, verification, note = holdout.split_holdout(_batches(400, 32), verification_samples=500, seed=3)
  held = np.concatenate([b["x"][:, 0] for b in verification])
  used = np.concatenate([b["x"][:, 0] for b in calibration])
  assert len(held) == 100 and len(used) == 300  # a quarter, capped by verification_samples
  assert not set(held) & set(used) and len(set(held) | set(used)) == 400
  # A sorted validation set: both sides must see its beginning and its end.
  for values in (held, used):
    assert values.min() < 100 and values.max() >= 300
  assert [len(b["x"]) for b in calibration] == [32] * 9 + [12]  # the captured batch size is kept
  assert note == "of 400 captured samples, 300 calibrate and 100 verify (held out at random over the whole pass)"


@pytest.mark.unit
def test_verification_samples_caps_the_hold_out_and_tiny_sets_still_split():
  _, verification, _ = holdout.split_holdout(_batches(4000, 50), verification_samples=200)
  assert sum(len(b["x"]) for b in verification) == 200
  calibration, verification, note = holdout.split_holdout(_batches(2, 2), verification_samples=500)
  assert [len(b["x"]) for b in calibration] == [1] and [len(b["x"]) for b in verification] == [1]
  assert "of 2 captured samples, 1 calibrate and 1 verify" in note
  calibration, verification, _ = holdout.split_holdout(_batches(1, 1), verification_samples=500)
  assert len(calibration) == 1 and verification == []
  assert holdout.split_holdout([], verification_samples=500) == ([], [], None)


@pytest.mark.unit
def test_too_few_samples_are_said_not_swallowed():
  warnings = holdout.sample_warnings(1, 1, wants_int8=True)
  assert len(warnings) == 2
  assert warnings[0].startswith("INT8 calibrates on 1 samples; at least 300 are recommended (NVIDIA ModelOpt: 500)")
  assert "verification judges on 1 held-out samples" in warnings[1]
  assert holdout.sample_warnings(48, 500, wants_int8=False) == []  # calibration size matters only for INT8
  assert holdout.sample_warnings(300, 100, wants_int8=True) == []


@pytest.mark.tf
def test_the_manifest_says_how_samples_were_split_and_warns(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  saved_models.classifier(tmp_path / "model")

  write_native = saved_models.writer_copying(tmp_path / "model")
  samples = saved_models.samples(64)
  prepare.prepare_export(str(tmp_path / "out"), 1, {"kind": "test"}, ConversionOptions(formats=()),
                          write_native=write_native, batches=[{"x": samples["x"][:32]}, {"x": samples["x"][32:]}])
  entry = json.loads((tmp_path / "out" / "manifests" / "1" / "manifest.json").read_text())["artifacts"]["calibration"]
  assert entry["samples"] == 48 and entry["verification_samples"] == 16
  assert entry["split"].startswith("of 64 captured samples, 48 calibrate and 16 verify")
  assert any("INT8 calibrates on 48 samples" in w for w in entry["warnings"])
  assert any("verification judges on 16 held-out samples" in w for w in entry["warnings"])
  held = np.load(tmp_path / "out" / "calibration" / "1" / "verification.npz")["x"]
  used = np.load(tmp_path / "out" / "calibration" / "1" / "calibration.npz")["x"]
  assert not any((row == used).all(axis=1).any() for row in held)


@pytest.mark.tf
def test_held_out_samples_without_calibration_samples_are_not_promised(tmp_path):
  """The worker verifies only what is on disk: no calibration samples means no sample file at all."""
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  saved_models.classifier(tmp_path / "model")

  write_native = saved_models.writer_copying(tmp_path / "model")
  request = prepare.prepare_export(str(tmp_path / "out"), 1, {"kind": "test"}, ConversionOptions(formats=()),
                                    write_native=write_native, batches=[],
                                    verification_batches=[saved_models.samples(8)])
  assert not request.has_calibration and not request.has_verification
  assert not (tmp_path / "out" / "calibration" / "1").exists()

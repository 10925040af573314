"""The calibration / verification split is by sample: a short validation pass still gives verification its
share, whatever the batch size (`SplitReservoir`, `verification_share`)."""

import json

import numpy as np
import pytest

from tftrt_keras.samples.reservoir import SplitReservoir, verification_share


def _pass(reservoir, sizes, start=0):
  """One pass of batches {"x": rows, "n": {"id": rows}} numbered over the pass (row ids start at `start`)."""
  reservoir.begin_pass()
  row = start
  for size in sizes:
    ids = np.arange(row, row + size)
    row += size
    if reservoir.wants():
      reservoir.offer({"x": ids.astype("float32")[:, None], "nested": [ids]})
    else:
      reservoir.skip()
  reservoir.end_pass()
  return reservoir


def _rows(batches):
  return np.concatenate([b["x"][:, 0] for b in batches]).astype(int) if batches else np.array([], int)


@pytest.mark.unit
@pytest.mark.parametrize("total, calibration, verification, share", [
    (774, 16 * 256, 500, 193),   # the weather example: 3 batches of 256 and one of 6
    (697, 16 * 128, 500, 174),   # a convnet, batch 128 over 697 validation samples
    (70, 16 * 32, 500, 35),      # in proportion (70 * 500 / 1012) beats a quarter
    (10000, 512, 500, 500),      # a long pass: each side what it wants
    (600, 512, 0, 0),            # verification off
    (30, 0, 500, 30),            # verification only (Estimator with calibration_input_fn)
    (1, 512, 500, 0),            # calibration keeps the only sample
])
def test_verification_share_of_a_pass(total, calibration, verification, share):
  assert verification_share(total, calibration, verification) == share


@pytest.mark.unit
def test_a_short_pass_gives_verification_its_share_even_when_the_last_batch_is_small():
  """70 samples in batches of 32: the batch split left verification one batch (32 or the 6 of the last one,
  depending on the seed); by sample it gets 35 every time."""
  for seed in range(20):
    reservoir = SplitReservoir(16, 0, seed=seed)
    reservoir.begin_pass()
    reservoir.wants()
    reservoir.offer({"x": np.arange(32, dtype="float32")[:, None], "nested": [np.arange(32)]})
    reservoir.set_verification_capacity(16, samples=500)  # as capture does after the first batch
    for start, size in ((32, 32), (64, 6)):
      assert reservoir.wants()
      ids = np.arange(start, start + size)
      reservoir.offer({"x": ids.astype("float32")[:, None], "nested": [ids]})
    reservoir.end_pass()
    calibration, verification = _rows(reservoir.last_pass), _rows(reservoir.last_verification)
    assert len(verification) == 35 and len(calibration) == 35
    assert not set(calibration) & set(verification) and set(calibration) | set(verification) == set(range(70))
    assert [len(b["x"]) for b in reservoir.last_pass] == [32, 3]  # the captured batch size is kept
    for batch in reservoir.last_pass + reservoir.last_verification:
      np.testing.assert_array_equal(batch["x"][:, 0].astype(int), batch["nested"][0])  # rows stay aligned
    assert reservoir.last_verification_indices == sorted(set(reservoir.last_verification_indices))


@pytest.mark.unit
def test_a_long_pass_keeps_bounded_batches_and_splits_rows_uniformly_and_deterministically():
  verification_counts, calibration_counts = np.zeros(3200), np.zeros(3200)
  for seed in range(200):
    reservoir = SplitReservoir(4, 3, seed=seed, verification_samples=50)
    reservoir.begin_pass()
    held = []
    for i in range(100):  # 100 batches of 32
      ids = np.arange(i * 32, i * 32 + 32)
      if reservoir.wants():
        reservoir.offer({"x": ids.astype("float32")[:, None], "nested": [ids]})
      else:
        reservoir.skip()
      held.append(len(reservoir.held()))
    reservoir.end_pass()
    assert max(held) == 7  # at most the 4 + 3 batches the reservoir keeps
    calibration, verification = _rows(reservoir.last_pass), _rows(reservoir.last_verification)
    assert len(verification) == 50 and len(calibration) == 4 * 32 and not set(calibration) & set(verification)
    verification_counts[verification] += 1
    calibration_counts[calibration] += 1
  # Neither side leans to one end of the pass (200 * 50 / 2 = 5000 expected per half).
  for counts in (verification_counts, calibration_counts):
    assert 0.44 < counts[:1600].sum() / counts.sum() < 0.56
  again = [_rows(_pass(SplitReservoir(4, 3, seed=5, verification_samples=50), [32] * 100).last_verification)
           for _ in range(2)]
  np.testing.assert_array_equal(*again)
  other = _rows(_pass(SplitReservoir(4, 3, seed=6, verification_samples=50), [32] * 100).last_verification)
  assert set(other) != set(again[0])


@pytest.mark.tf
def test_keras_short_validation_pass_verifies_on_its_share_of_samples(primary_keras, tmp_path):
  """fit with 70 validation samples in batches of 32: the manifest counts 35 verification samples."""
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  from tests.keras_models import classifier, train_data  # pylint: disable=g-import-not-at-top
  model = classifier(primary_keras)
  x, y = train_data()
  xv, yv = train_data(70, seed=1)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=("tftrt",), precisions=("FP32",), blocking=True,
                                   verbose=0)
  model.fit(x, y, validation_data=(xv, yv), batch_size=32, epochs=1, callbacks=[callback], verbose=0)
  with open(callback.manifest_paths[0]) as f:
    entry = json.load(f)["artifacts"]["calibration"]
  assert (entry["samples"], entry["verification_samples"]) == (35, 35), entry
  assert entry["batch_sizes"] == [32, 3]

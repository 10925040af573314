"""BatchReservoir and SplitReservoir: uniform samples of batches over a pass, in bounded memory (tier unit)."""

import collections

import pytest

from tftrt_keras.samples.reservoir import BatchReservoir, SplitReservoir

pytestmark = pytest.mark.unit


def _one_pass(reservoir, n):
  reservoir.begin_pass()
  for i in range(n):
    if reservoir.wants():
      reservoir.offer(i)
    else:
      reservoir.skip()
  return reservoir.end_pass()


def test_keeps_k_batches_in_pass_order_and_knows_their_positions():
  reservoir = BatchReservoir(4, seed=1)
  kept = _one_pass(reservoir, 50)
  assert len(kept) == 4 and kept == sorted(kept)
  assert reservoir.last_indices == kept  # the batches here are their own indices
  assert reservoir.seen == 50


def test_short_pass_keeps_everything():
  assert _one_pass(BatchReservoir(8), 3) == [0, 1, 2]


def test_every_position_is_equally_likely():
  # 4000 passes of 40 batches, k=4: each index should be kept 4000 * 4/40 = 400 times (sd ~19).
  counts = collections.Counter()
  for seed in range(4000):
    counts.update(_one_pass(BatchReservoir(4, seed=seed), 40))
  assert set(counts) == set(range(40))
  assert all(300 < c < 500 for c in counts.values()), counts
  first_half = sum(counts[i] for i in range(20))
  assert 0.45 < first_half / sum(counts.values()) < 0.55  # not biased to the start of a (sorted) pass


def test_decisions_depend_only_on_the_seed():
  # Every worker of a distributed run must take the same steps: same seed, same decisions.
  assert _one_pass(BatchReservoir(3, seed=7), 100) == _one_pass(BatchReservoir(3, seed=7), 100)


def test_memory_holds_at_most_k_batches_even_across_passes():
  reservoir = BatchReservoir(2, seed=0)
  _one_pass(reservoir, 30)
  reservoir.begin_pass()
  held = []
  for i in range(30):
    if reservoir.wants():
      reservoir.offer(i)
    else:
      reservoir.skip()
    held.append(len(reservoir._kept) + len(reservoir.last_pass))  # pylint: disable=protected-access
  assert max(held) == 2


def _passes(reservoir, n, count):
  """`count` passes of n batches (the batches are their own indices); returns what each pass pulled."""
  pulled = []
  for _ in range(count):
    reservoir.begin_pass()
    taken = 0
    for i in range(n):
      if reservoir.wants():
        reservoir.offer(i)
        taken += 1
      else:
        reservoir.skip()
    reservoir.end_pass()
    pulled.append(taken)
  return pulled


def test_a_pass_of_known_length_pulls_exactly_k_and_stays_uniform():
  counts = collections.Counter()
  for seed in range(3000):
    reservoir = BatchReservoir(4, seed=seed, reuse_pass_length=True)
    pulled = _passes(reservoir, 40, 2)
    assert pulled[0] > 4 and pulled[1] == 4  # the second pass knows its length: no batch pulled in vain
    counts.update(reservoir.last_pass)
  assert set(counts) == set(range(40))
  assert all(200 < c < 400 for c in counts.values()), counts  # 3000 * 4/40 = 300 each (sd ~16)


def test_a_pass_longer_than_the_previous_one_is_still_sampled_uniformly():
  counts = collections.Counter()
  for seed in range(3000):
    reservoir = BatchReservoir(4, seed=seed, reuse_pass_length=True)
    _passes(reservoir, 20, 1)
    _passes(reservoir, 40, 1)  # the plan covers the first 20; Algorithm R goes on after them
    assert len(reservoir.last_pass) == 4
    counts.update(reservoir.last_pass)
  first_half = sum(counts[i] for i in range(20))
  assert 0.45 < first_half / sum(counts.values()) < 0.55
  assert all(200 < c < 400 for c in counts.values()), counts


def test_split_samples_are_disjoint_and_each_uniform_over_the_pass():
  calibration, verification = collections.Counter(), collections.Counter()
  for seed in range(3000):
    reservoir = SplitReservoir(3, 5, seed=seed)
    _passes(reservoir, 40, 2)
    assert len(reservoir.last_pass) == 3 and len(reservoir.last_verification) == 5
    assert not set(reservoir.last_pass) & set(reservoir.last_verification)
    assert reservoir.last_pass == sorted(reservoir.last_pass)
    assert reservoir.last_verification == sorted(reservoir.last_verification)
    calibration.update(reservoir.last_pass)
    verification.update(reservoir.last_verification)
  # 3000 * 3/40 = 225 and 3000 * 5/40 = 375 per position; neither side leans to one end of the pass.
  assert all(150 < c < 300 for c in calibration.values()) and set(calibration) == set(range(40))
  assert all(280 < c < 470 for c in verification.values()) and set(verification) == set(range(40))
  for counts in (calibration, verification):
    assert 0.45 < sum(counts[i] for i in range(20)) / sum(counts.values()) < 0.55


def test_a_short_pass_is_shared_in_proportion_and_the_verification_size_can_follow_the_first_batch():
  reservoir = SplitReservoir(2, 0, seed=0)
  reservoir.begin_pass()
  assert reservoir.wants()
  reservoir.offer(0)
  reservoir.set_verification_capacity(6)  # known once the first batch (and its size) was seen
  for i in range(1, 4):
    assert reservoir.wants()
    reservoir.offer(i)
  reservoir.end_pass()
  # 4 batches for 2 + 6 wanted: shared 1 : 3, together the whole pass.
  assert len(reservoir.last_pass) == 1 and len(reservoir.last_verification) == 3
  assert sorted(reservoir.last_pass + reservoir.last_verification) == [0, 1, 2, 3]
  with pytest.raises(ValueError, match="cannot resize"):
    reservoir.begin_pass()
    for i in range(10):
      if reservoir.wants():
        reservoir.offer(i)
      else:
        reservoir.skip()
    reservoir.set_verification_capacity(1)


def test_a_single_batch_pass_goes_to_calibration():
  reservoir = SplitReservoir(8, 16, seed=0)
  _passes(reservoir, 1, 1)
  assert reservoir.last_pass == [0] and reservoir.last_verification == []

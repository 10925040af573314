"""BatchReservoir: a uniform sample of k batches over a pass of unknown length, in bounded memory (tier unit)."""

import collections

import pytest

from tftrt_keras.batch_sampler import BatchReservoir

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

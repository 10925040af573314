"""A uniform random sample of k batches over one pass of unknown length, in bounded memory.

Reservoir sampling (Vitter's Algorithm R): batch i (0-based) enters the reservoir with probability k/(i+1),
replacing a uniformly chosen resident. Whether a batch is wanted is decided *before* it is read
(`wants(i)`), so capture costs nothing on the batches it does not keep: the caller only pulls a batch's
values out of the device for the ~k(1 + ln(n/k)) batches that enter the reservoir. Memory holds at most k
batches, whatever n is.
"""

import random


class BatchReservoir:
  """Keeps a uniform sample of `capacity` batches from each pass.

  Args:
    capacity: k, the number of batches kept.
    seed: the sampling decisions depend only on the seed and the batch index, so every worker of a
      distributed run makes the same decisions (they trace and run identical steps).
  """

  def __init__(self, capacity, seed=0):
    self.capacity = int(capacity)
    self._rng = random.Random(seed)
    self.last_pass = []      # the previous pass's sample, in batch order
    self.last_indices = []   # and the positions those batches had in their pass
    self.begin_pass()

  def begin_pass(self):
    # The previous sample goes now, not when this pass ends: memory peaks at k batches, not 2k.
    self.last_pass, self.last_indices = [], []
    self._kept = []          # (index, batch)
    self._index = 0
    self._slot_for_next = None

  def wants(self):
    """Decides for the next batch (index = batches seen so far); must be followed by `offer` or `skip`."""
    i = self._index
    if i < self.capacity:
      self._slot_for_next = len(self._kept)
      return True
    j = self._rng.randrange(i + 1)
    self._slot_for_next = j if j < self.capacity else None
    return self._slot_for_next is not None

  def offer(self, batch):
    """Stores `batch` in the slot `wants()` chose."""
    slot = self._slot_for_next
    entry = (self._index, batch)
    if slot == len(self._kept):
      self._kept.append(entry)
    else:
      self._kept[slot] = entry
    self._index += 1

  def skip(self):
    self._index += 1

  @property
  def seen(self):
    return self._index

  def end_pass(self):
    """Closes the pass; `last_pass` then holds its sample in the order the batches came."""
    if self._kept:
      self.last_pass = [batch for _, batch in sorted(self._kept, key=lambda e: e[0])]
      self.last_indices = sorted(index for index, _ in self._kept)
    return self.last_pass

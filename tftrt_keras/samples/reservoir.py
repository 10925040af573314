"""Uniform random samples of batches over one pass of unknown length, in bounded memory.

`BatchReservoir` is reservoir sampling (Vitter's Algorithm R), decided *before* a batch is read (`wants()`), so
only the ~k(1 + ln(n/k)) batches that enter are pulled off the device. With `reuse_pass_length=True` a later
pass draws its k positions in advance from the previous pass's length (exactly k pulls), falling back to
Algorithm R beyond it. `SplitReservoir` keeps two disjoint uniform samples (calibration and verification).
"""

import random

import numpy as np


class BatchReservoir:
  """Keeps a uniform sample of `capacity` batches from each pass.

  Args:
    capacity: k, the number of batches kept.
    seed: decisions depend only on it, the batch index and the previous pass's length, so every worker of a
      distributed run decides the same.
    reuse_pass_length: draw positions in advance from the previous pass's length (fewer pulls, same sample).
  """

  def __init__(self, capacity, seed=0, reuse_pass_length=False):
    self.capacity = int(capacity)
    self._rng = random.Random(seed)
    self._reuse_pass_length = bool(reuse_pass_length)
    self._previous_length = None
    self.last_pass = []      # the previous pass's sample, in batch order
    self.last_indices = []   # and the positions those batches had in their pass
    self.begin_pass()

  def begin_pass(self):
    # The previous sample goes now, not when this pass ends: memory peaks at k batches, not 2k.
    self.last_pass, self.last_indices = [], []
    self._kept = []          # (index, batch)
    self._index = 0
    self._slot_for_next = None
    self._planned = None
    n = self._previous_length
    if self._reuse_pass_length and n is not None and n > self.capacity > 0:
      self._planned = frozenset(self._rng.sample(range(n), self.capacity))
      self._planned_length = n

  def resize(self, capacity):
    """Changes k while the current pass is still filling the reservoir (no batch was dropped yet)."""
    capacity = int(capacity)
    if self._index > min(self.capacity, capacity) or self._planned is not None:
      raise ValueError(f"cannot resize a reservoir from {self.capacity} to {capacity} after {self._index} "
                       "batches of a pass")
    self.capacity = capacity

  def wants(self):
    """Decides for the next batch (index = batches seen so far); must be followed by `offer` or `skip`."""
    i = self._index
    if self._planned is not None and i < self._planned_length:
      self._slot_for_next = len(self._kept) if i in self._planned else None
      return self._slot_for_next is not None
    if len(self._kept) < self.capacity:  # filling (also after a plan that fell short of its length)
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

  @property
  def kept(self):
    """How many batches the current pass holds."""
    return len(self._kept)

  def end_pass(self):
    """Closes the pass; `last_pass` then holds its sample in the order the batches came."""
    if self._kept:
      self.last_pass = [batch for _, batch in sorted(self._kept, key=lambda e: e[0])]
      self.last_indices = sorted(index for index, _ in self._kept)
    if self._index:
      self._previous_length = self._index
    self._kept = []
    self._planned = None
    return self.last_pass


def verification_share(total, calibration_wanted, verification_wanted):
  """How many of a pass's `total` kept samples verify; see `SplitReservoir`."""
  if verification_wanted <= 0 or total <= 0:
    return 0
  if calibration_wanted <= 0:
    return min(verification_wanted, total)
  if total >= calibration_wanted + verification_wanted:
    return verification_wanted
  share = max(round(total * verification_wanted / (calibration_wanted + verification_wanted)),
              min(verification_wanted, total // 4))
  return min(share, total - 1)  # calibration keeps at least one sample


class SplitReservoir:
  """Two disjoint uniform samples from each pass, split by sample: calibration and verification.

  One reservoir keeps both capacities' batches; at the end of the pass their samples are assigned at random:
  verification gets `verification_samples`, calibration the rest, re-batched. A short pass is shared in
  proportion (`verification_share`). Batches are (nested) numpy arrays, samples along axis 0.

  Args:
    calibration_capacity: batches kept for calibration.
    verification_capacity: batches kept for verification; `set_verification_capacity` may set it during the
      first pass (it depends on the first batch's size).
    seed, reuse_pass_length: as for `BatchReservoir`.
    verification_samples: samples verification wants (default: `verification_capacity` full batches).
  """

  def __init__(self, calibration_capacity, verification_capacity=0, seed=0, reuse_pass_length=True,
               verification_samples=None):
    self.calibration_capacity = int(calibration_capacity)
    self.verification_capacity = int(verification_capacity)
    self.verification_samples = verification_samples
    self._joint = BatchReservoir(self.calibration_capacity + self.verification_capacity, seed=seed,
                                 reuse_pass_length=reuse_pass_length)
    self._split_rng = random.Random(f"split-{seed}")
    self.last_pass = []               # calibration batches of the previous pass, in pass order
    self.last_indices = []            # positions in the pass of the batches they came from
    self.last_verification = []       # verification samples of the previous pass, one part per source batch
    self.last_verification_indices = []

  def set_verification_capacity(self, capacity, samples=None):
    """Sets the verification sample size (in batches, and in samples when given); see `BatchReservoir.resize`
    for when it may change."""
    self._joint.resize(self.calibration_capacity + int(capacity))
    self.verification_capacity = int(capacity)
    if samples is not None:
      self.verification_samples = int(samples)

  def begin_pass(self):
    self.last_pass, self.last_indices, self.last_verification, self.last_verification_indices = [], [], [], []
    self._joint.begin_pass()

  def wants(self):
    return self._joint.wants()

  def offer(self, batch):
    self._joint.offer(batch)

  def skip(self):
    self._joint.skip()

  @property
  def seen(self):
    return self._joint.seen

  @property
  def capacity(self):
    return self._joint.capacity

  def held(self):
    """Batches held right now (the current pass's and the previous pass's), for memory accounting."""
    current = [b for _, b in self._joint._kept]  # pylint: disable=protected-access
    return current + self.last_pass + self.last_verification

  def end_pass(self):
    """Closes the pass; returns the calibration sample (the verification one is `last_verification`)."""
    kept = self._joint._kept  # pylint: disable=protected-access
    self._joint.end_pass()
    if not kept:
      return self.last_pass
    entries = sorted(kept, key=lambda e: e[0])
    sizes = [num_rows(b) for _, b in entries]
    batch_size, total = max(sizes), sum(sizes)
    verification_wanted = (self.verification_samples if self.verification_samples is not None
                           else self.verification_capacity * batch_size)
    calibration_wanted = self.calibration_capacity * batch_size
    held = verification_share(total, calibration_wanted, verification_wanted)
    order = np.random.default_rng(self._split_rng.getrandbits(64)).permutation(total)
    verify_rows = np.sort(order[:held])
    calibrate_rows = np.sort(order[held:held + min(calibration_wanted, total - held)])
    self.last_verification, self.last_verification_indices = _parts(entries, sizes, verify_rows)
    parts, self.last_indices = _parts(entries, sizes, calibrate_rows)
    self.last_pass = _rebatch(parts, batch_size)
    return self.last_pass


def num_rows(batch):
  """Samples in a batch (an array or a nesting of lists/tuples/dicts of arrays)."""
  while isinstance(batch, (list, tuple, dict)):
    batch = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
  return len(batch) if np.ndim(batch) else 1


def _map(function, *batches):
  first = batches[0]
  if isinstance(first, dict):
    return {k: _map(function, *(b[k] for b in batches)) for k in first}
  if isinstance(first, (list, tuple)):
    return type(first)(_map(function, *items) for items in zip(*batches))
  return function(*batches)


def _parts(entries, sizes, rows):
  """The `rows` (sorted, numbered over the whole pass) of each batch: ([part], [its batch's position])."""
  parts, indices, start = [], [], 0
  for (index, batch), size in zip(entries, sizes):
    mine = rows[(rows >= start) & (rows < start + size)] - start
    if len(mine):
      parts.append(batch if len(mine) == size else _map(lambda a, m=mine: np.asarray(a)[m], batch))
      indices.append(index)
    start += size
  return parts, indices


def _rebatch(parts, batch_size):
  """Parts joined and cut into batches of `batch_size` (the captured size: engine profiles depend on it)."""
  if not parts or all(num_rows(p) == batch_size for p in parts):
    return parts
  joined = _map(lambda *arrays: np.concatenate([np.asarray(a) for a in arrays]), *parts)
  total = num_rows(joined)
  return [_map(lambda a, s=s: a[s:s + batch_size], joined) for s in range(0, total, batch_size)]

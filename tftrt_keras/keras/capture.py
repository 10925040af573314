"""Capturing validation batches while `fit` validates, without touching the user's data pipeline.

During `fit` the callback sets a `CapturingTestFunction` as `model.test_function` (Keras 2 and 3 both reuse it).
Per step the reservoir decides (from the seed and step index) whether the batch is wanted: if not, Keras' own
compiled function runs untouched; if so, the batch is pulled, its inputs copied, and the same `test_step` runs
through a `tf.function` of ours, compiled as Keras compiles its own, so validation metrics are unchanged.
Nothing runs inside Keras' compiled step (it may be XLA-compiled). Our step is traced once per model, keyed by
Keras' test function and the strategy, so recompiling traces again. Calibration and verification samples are
two disjoint uniform samples (`tftrt_keras.samples.reservoir.SplitReservoir`).
"""

import math
import weakref

import numpy as np


def unpack_inputs(data):
  """The `x` of a Keras data element `(x,)`, `(x, y)` or `(x, y, sample_weight)`, as Keras unpacks it."""
  if isinstance(data, list):
    data = tuple(data)
  if not isinstance(data, tuple):
    return data
  return data[0]


def _to_numpy(strategy, value):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if strategy is None or _is_default_strategy(strategy):
    return tf.nest.map_structure(np.asarray, value)

  def leaf(v):
    parts = strategy.experimental_local_results(v) if strategy is not None else (v,)
    arrays = [np.asarray(p) for p in parts]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
  return tf.nest.map_structure(leaf, value)


def _batch_size(structure):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  leaves = tf.nest.flatten(structure)
  return int(np.shape(leaves[0])[0]) if leaves and np.ndim(leaves[0]) else 1


# model -> _CachedStep. Weak keys: the cache never keeps a model alive, and its step function refers to the model
# only weakly (a strong reference from the value would keep the key alive for ever).
_STEP_CACHE = weakref.WeakKeyDictionary()


class _CachedStep:

  def __init__(self, original, strategy, jit_compile, run_eagerly, function):
    self._original = weakref.ref(original)
    self._strategy = weakref.ref(strategy)
    self._settings = (jit_compile, run_eagerly)
    self.function = function

  def matches(self, original, strategy, jit_compile, run_eagerly):
    return (self._original() is original and self._strategy() is strategy
            and self._settings == (jit_compile, run_eagerly))


def _is_default_strategy(strategy):
  """TensorFlow's default (no-op) strategy: one replica, no distributed values."""
  return type(strategy).__name__ == "_DefaultDistributionStrategy"


def _model_settings(model):
  jit = getattr(model, "jit_compile", None)
  if jit is None:
    jit = getattr(model, "_jit_compile", False)  # Keras 2
  run_eagerly = bool(getattr(model, "run_eagerly", False))
  return bool(jit) and not run_eagerly, run_eagerly


def step_function(model, original):
  """Our test step for `model` (built once per model, Keras test function and strategy); see the module doc.

  Returns:
    (callable taking a list of per-replica input parts and returning the step's logs, whether it was built now).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  strategy = model.distribute_strategy
  jit_compile, run_eagerly = _model_settings(model)
  cached = _STEP_CACHE.get(model)
  if cached is not None and cached.matches(original, strategy, jit_compile, run_eagerly):
    return cached.function, False
  model_ref = weakref.ref(model)

  def test_step(data):
    return model_ref().test_step(data)
  if jit_compile:  # as Keras compiles its own step
    test_step = tf.function(test_step, jit_compile=True, reduce_retracing=True)

  def step_on_data(local_parts):
    if _is_default_strategy(strategy):  # no replicas to spread over: the batch as it is (what Keras does too)
      return strategy.run(test_step, args=(local_parts[0],))
    # A tf.function cannot take distributed values (PerReplica) as arguments: each local replica's part of
    # the batch comes in as plain tensors and is distributed again inside.
    data = strategy.experimental_distribute_values_from_function(
        lambda context: local_parts[context.replica_id_in_sync_group % len(local_parts)])
    outputs = strategy.run(test_step, args=(data,))
    # Test logs are metric results, already aggregated across replicas: any replica's copy is the value.
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], outputs)
  function = step_on_data if run_eagerly else tf.function(step_on_data, reduce_retracing=True)
  _STEP_CACHE[model] = _CachedStep(original, strategy, jit_compile, run_eagerly, function)
  return function, True


class CapturingTestFunction:
  """Stands in for `model.test_function` during `fit`; see the module docstring.

  Args:
    model: the Keras model.
    original: the test function Keras built (`model.make_test_function()`).
    reservoir: a `SplitReservoir` (or a `BatchReservoir`, for calibration only).
    steps_per_execution: batches one call of `original` consumes; a kept execution contributes its first batch.
    verification_samples: samples the verification sample aims for (0: none).
    label_keys: callable(y, sample_weight) -> {key: array} of a batch's labels, or None for inputs only.
      Labels are kept for the verification samples only (`last_verification_labels`).
  """

  def __init__(self, model, original, reservoir, steps_per_execution=1, verification_samples=0, label_keys=None):
    self._model = weakref.ref(model)
    self.original = original
    self._reservoir = reservoir
    self._steps = max(1, int(steps_per_execution))
    self._strategy = model.distribute_strategy
    self._step_on_data, self.traced_now = step_function(model, original)
    self._verification_samples = int(verification_samples or 0)
    self._sized = not self._verification_samples
    self.active = False   # capture only inside fit's validation passes
    self.pulled = 0       # batches whose values were copied out (a cost figure for benchmarks)
    self._label_keys = label_keys
    self._labelled = None  # whether this pass's kept batches are {"inputs", "labels"} pairs
    self.last_verification_labels = []

  def begin_pass(self):
    """A validation pass of `fit` starts: capture from now on."""
    self._reservoir.begin_pass()
    self.active = True

  def end_pass(self):
    """The pass ended; `last_pass` and `last_verification` now hold its samples."""
    self.active = False
    self._reservoir.end_pass()
    reservoir = self._reservoir
    if self._labelled:
      # Calibration needs no labels: only the verification samples keep theirs.
      reservoir.last_pass = [b["inputs"] for b in reservoir.last_pass]
      verification = getattr(reservoir, "last_verification", [])
      self.last_verification_labels = [b["labels"] for b in verification]
      reservoir.last_verification = [b["inputs"] for b in verification]
    elif self._labelled is False:
      self.last_verification_labels = []

  @property
  def last_pass(self):
    """The latest completed pass's calibration batches (inputs as numpy structures), in pass order."""
    return list(self._reservoir.last_pass)

  @property
  def last_verification(self):
    """The latest completed pass's verification batches, disjoint from `last_pass`, in pass order."""
    return list(getattr(self._reservoir, "last_verification", []))

  def __call__(self, iterator):
    if not self.active:
      return self.original(iterator)
    if not self._reservoir.wants():
      self._reservoir.skip()
      return self.original(iterator)
    logs = None
    for i in range(self._steps):
      try:
        data = next(iterator)
      except (StopIteration, _out_of_range()):
        if logs is None:
          raise
        break
      if i == 0:
        inputs = _to_numpy(self._strategy, unpack_inputs(data))
        size = _batch_size(inputs)
        labels = self._labels_of(data)
        self._reservoir.offer({"inputs": inputs, "labels": labels} if self._labelled else inputs)
        self.pulled += 1
        if not self._sized:
          self._sized = True
          self._reservoir.set_verification_capacity(
              math.ceil(self._verification_samples / max(1, size)), samples=self._verification_samples)
      logs = self._step_on_data(self._local_parts(data))
    return logs

  def _labels_of(self, data):
    """The batch's labels keyed by `label_keys`; decides once per capture whether batches carry labels."""
    if self._label_keys is None:
      self._labelled = False
      return None
    from tftrt_keras.task_metrics.labels import split_element  # pylint: disable=g-import-not-at-top
    _, y, sample_weight = split_element(data)
    labels = {} if y is None else self._label_keys(_to_numpy(self._strategy, y),
                                                   None if sample_weight is None
                                                   else _to_numpy(self._strategy, sample_weight))
    if self._labelled is None:
      self._labelled = bool(labels)
    return labels if self._labelled else None

  def _local_parts(self, data):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if _is_default_strategy(self._strategy):
      return [data]
    count = len(self._strategy.experimental_local_results(tf.nest.flatten(data)[0]))
    return [tf.nest.map_structure(lambda v, i=i: self._strategy.experimental_local_results(v)[i], data)
            for i in range(count)]


def _out_of_range():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.errors.OutOfRangeError

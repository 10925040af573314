"""Capturing validation batches while `fit` validates, without touching the user's data pipeline.

Keras 2 and Keras 3 both run validation through `model.test_function(iterator)`, obtained from
`make_test_function()`, which returns the cached function when one is set. During `fit` the callback sets a
`CapturingTestFunction` there. For each step it first asks the reservoir whether the next batch is wanted
(a decision that depends only on the seed and the step index):
- not wanted (almost every step): Keras' own compiled function runs on the iterator, untouched;
- wanted: the batch is pulled from the iterator, its inputs are copied out, and the same `test_step` runs on
  it through a `tf.function` of ours, under the model's distribution strategy.
Nothing runs inside Keras' compiled step (Keras 3 may XLA-compile it; a py_function there would break that).
"""

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
  def leaf(v):
    parts = strategy.experimental_local_results(v) if strategy is not None else (v,)
    arrays = [np.asarray(p) for p in parts]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
  return tf.nest.map_structure(leaf, value)


class CapturingTestFunction:
  """Stands in for `model.test_function` during `fit`; see the module docstring.

  Args:
    model: the Keras model.
    original: the test function Keras built (`model.make_test_function()`).
    reservoir: a `BatchReservoir`.
    steps_per_execution: batches one call of `original` consumes.
  """

  def __init__(self, model, original, reservoir, steps_per_execution=1):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._model = model
    self.original = original
    self._reservoir = reservoir
    self._steps = max(1, int(steps_per_execution))
    strategy = model.distribute_strategy

    def step_on_data(local_parts):
      # A tf.function cannot take distributed values (PerReplica) as arguments: each local replica's part of
      # the batch comes in as plain tensors and is distributed again inside.
      data = strategy.experimental_distribute_values_from_function(
          lambda context: local_parts[context.replica_id_in_sync_group % len(local_parts)])
      outputs = strategy.run(model.test_step, args=(data,))
      # Test logs are metric results, already aggregated across replicas: any replica's copy is the value.
      return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], outputs)
    self._step_on_data = tf.function(step_on_data, reduce_retracing=True)
    self._strategy = strategy
    self.active = False   # capture only inside fit's validation passes
    self.pulled = 0       # batches whose values were copied out (a cost figure for benchmarks)

  def begin_pass(self):
    """A validation pass of `fit` starts: capture from now on."""
    self._reservoir.begin_pass()
    self.active = True

  def end_pass(self):
    """The pass ended; `last_pass` now holds its sample."""
    self.active = False
    self._reservoir.end_pass()

  @property
  def last_pass(self):
    """The latest completed pass's kept batches (inputs as numpy structures), in pass order."""
    return list(self._reservoir.last_pass)

  def __call__(self, iterator):
    if not self.active or not self._reservoir.wants():
      if self.active:
        for _ in range(self._steps):
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
        self._reservoir.offer(_to_numpy(self._strategy, unpack_inputs(data)))
        self.pulled += 1
      else:
        self._reservoir.skip()
      logs = self._step_on_data(self._local_parts(data))
    return logs

  def _local_parts(self, data):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    count = len(self._strategy.experimental_local_results(tf.nest.flatten(data)[0]))
    return [tf.nest.map_structure(lambda v, i=i: self._strategy.experimental_local_results(v)[i], data)
            for i in range(count)]


def _out_of_range():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.errors.OutOfRangeError

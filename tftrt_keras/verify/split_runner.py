"""Front + variant as one runner: a split model's variant judged end to end on the user's own inputs.

A variant on the back of a split model takes cut tensors; feeding the user's samples through the TF front first
means a wrong front, cut or back all show.
"""

from tftrt_keras.formats import split_graph
from tftrt_keras.formats.base import Runner
from tftrt_keras.formats.savedmodel import SavedModelRunner


class FrontThenBack(Runner):
  """Runs the TF front on the model's inputs, then `back` on the cut tensors and the inputs the back reads.

  Args:
    front_dir: the front SavedModel (with its `split.json`).
    back: the variant's runner; closed with this one.
  """

  def __init__(self, front_dir, back):
    self.plan = split_graph.read_plan(front_dir)
    self._front = SavedModelRunner(front_dir, split_graph.FRONT_SIGNATURE)
    self._back = back

  def _back_feeds(self, feeds):
    return split_graph.front_samples(self._front, self.plan, feeds)

  def prepared_call(self, feeds):
    # Both halves run inside the timed call: the latency is what a request through front and back costs.
    return lambda: self._back.run(self._back_feeds(feeds))

  def close(self):
    try:
      self._back.close()
    finally:
      self._front.close()


def after_front(runner, entry, run):
  """`runner` composed behind the front when the artifact's manifest `entry` says it runs after one."""
  if not entry.get("after_front"):
    return runner
  front_dir = run.artifact_dir(entry["after_front"])
  if front_dir is None:
    runner.close()
    raise RuntimeError(f"{entry['after_front']} (the TF front this variant runs after) is not usable")
  return FrontThenBack(front_dir, runner)

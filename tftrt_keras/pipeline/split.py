"""Step 2b of an export: TensorFlow keeps a model's string/lookup front, the variants take the rest.

With a cut (`formats.split_graph`), the front is written as artifact `front`, the manifest's `split` says what
runs where, and the build job points at the back (samples: the front's outputs). Verification runs front +
variant end to end on the user's samples.
"""

import time
import traceback

from absl import logging
import numpy as np

from tftrt_keras.artifacts.manifest import FAILED, OK
from tftrt_keras.formats import split_graph
from tftrt_keras.formats.frozen import FrozenGraphRunner
from tftrt_keras.formats.savedmodel import SavedModelRunner

FRONT = "front"
# Samples the front is checked on against the frozen graph (the rest are for calibration and verification).
_CHECK_SAMPLES = 16


def _error_text(err):
  return f"{type(err).__name__}: {err}".strip()


def _some_samples(run):
  try:
    samples = run.job.calibration_samples()
  except Exception:  # pylint: disable=broad-except
    return None
  return {k: np.asarray(v)[:_CHECK_SAMPLES] for k, v in samples.items()} if samples else None


def plan_front(run, frozen_dir):
  """Plans the cut of the frozen graph and, where there is one, writes and checks the front; never raises.

  Records `run.manifest["split"]` and sets `run.job.split`.
  """
  started = time.monotonic()
  samples = _some_samples(run)
  try:
    plan = split_graph.plan_split(frozen_dir, samples)
  except split_graph.CutRefused as err:
    run.manifest["split"] = {"refused": str(err)}
    run.save()
    return
  except Exception as err:  # pylint: disable=broad-except
    logging.error("tftrt_keras: planning the split failed:\n%s", traceback.format_exc())
    run.manifest["split"] = {"error": _error_text(err)}
    run.save()
    return
  if plan is None:
    return
  try:
    path, _ = run.build_into_temp(FRONT, lambda d: split_graph.write_front(frozen_dir, plan, d))
    checked = _check_front(path, frozen_dir, plan, samples)
  except Exception as err:  # pylint: disable=broad-except
    logging.error("tftrt_keras: writing the TF front failed:\n%s", traceback.format_exc())
    run.record(FRONT, FAILED, reason=_error_text(err))
    run.manifest["split"] = {"error": f"the TF front could not be written: {_error_text(err)}"}
    run.save()
    return
  run.record(FRONT, OK, path, checked=checked, signature_key=split_graph.FRONT_SIGNATURE)
  run.manifest["split"] = {
      "cut": plan["cut"], "front": run.layout.relative(run.request.version, path),
      "runs_in_tf": plan["runs_in_tf"], "front_inputs": plan["front_inputs"], "back_inputs": plan["back_inputs"],
      "outputs": plan["outputs"], "seconds": round(time.monotonic() - started, 3)}
  run.save()
  run.job.split = {"frozen_dir": frozen_dir, "front_dir": path, "plan": plan}


def _check_front(front_dir, frozen_dir, plan, samples):
  """The front loads and gives the frozen graph's values at the cut (on the samples, else on empty inputs)."""
  feeds = samples or {k: v for k, v in split_graph.synthetic_feeds(frozen_dir, 2).items()}
  feeds = {k: feeds[k] for k in plan["front_inputs"]}
  front = SavedModelRunner(front_dir, split_graph.FRONT_SIGNATURE)
  try:
    got = front.run(feeds)
  finally:
    front.close()
  with FrozenGraphRunner(frozen_dir) as session:
    want = session.run_tensors(feeds, [t["tensor"] for t in plan["cut"]])
  for t in plan["cut"]:
    if not np.array_equal(got[t["name"]], want[t["tensor"]]):
      raise AssertionError(f"the front's {t['name']} differs from the frozen graph's {t['tensor']}")
  return (f"passed: loads, and its {len(plan['cut'])} cut tensor(s) equal the frozen graph's on "
          f"{len(next(iter(feeds.values())))} {'captured' if samples else 'empty'} samples")


def point_job_at_back(run):
  """Makes `run.job` the back's: its signature from the cut tensors on, its samples the front's outputs."""
  split = run.job.split
  if not split:
    return
  run.job.signature = split_graph.back_signature(split["plan"], run.job.signature)
  load_user_samples, cache = run.job.load_calibration, {}

  def load_back_samples():
    if "samples" not in cache:
      front = SavedModelRunner(split["front_dir"], split_graph.FRONT_SIGNATURE)
      try:
        cache["samples"] = split_graph.front_samples(front, split["plan"], load_user_samples())
      finally:
        front.close()
    return cache["samples"]
  run.job.load_calibration = load_back_samples if load_user_samples else None

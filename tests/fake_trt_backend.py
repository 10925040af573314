"""TEST DOUBLE. A stand-in for the TF-TRT converter, for tests only; the product never uses it.

TF-TRT cannot run on machines without TensorRT and a GPU, so tests that need a "converted variant" on disk
(verification, fault injection, layout) select this backend with
`ConversionOptions(backend="tests.fake_trt_backend:FakeTrtBackendForTests")`. It does not convert anything:
it re-saves the normal export's signature as a SavedModel, optionally with its float variables perturbed, and
it can be told to misbehave. Its behaviour comes from environment variables, because it runs inside the
export worker (a child process) that inherits the test's environment:

  FAKE_TRT_PERTURB=<scale>            add scale * N(0,1) noise to every float variable (a "lossy" variant)
  FAKE_TRT_PERTURB_PRECISIONS=INT8,.. perturb only these precisions (default: all)
  FAKE_TRT_SLEEP_SECONDS=<s>          sleep after writing half the variant (to kill it mid-write)
  FAKE_TRT_FAIL=<precision>           raise RuntimeError for that precision
  FAKE_TRT_CRASH=<signal name>        the worker kills itself with that signal mid-write (SIGSEGV, SIGABRT)
  FAKE_TRT_STARTED_FILE=<path>        write the worker's pid to this file once the variant's temp directory
                                      has content (a test waits for it to strike mid-write)
  FAKE_TRT_FAULT_BY_VERSION=1:SIGSEGV,2:hang,...
                                      per export version (read from the temp directory's name), mid-write:
                                      kill the worker with that signal, or `hang` until something kills it
  FAKE_TRT_RELEASE_FILE=<path>        after writing half the variant, block until this file exists (a worker
                                      held mid-write for as long as a test needs, without timing guesses)
"""

import os
import re
import signal
import time

FAKE_REASON = "unused"


def _fault_for_version(output_dir):
  """The FAKE_TRT_FAULT_BY_VERSION entry for the version being written (temp dirs are `.tmp-<version>-...`)."""
  faults = dict(item.split(":", 1) for item in os.environ.get("FAKE_TRT_FAULT_BY_VERSION", "").split(",") if item)
  match = re.match(r"\.tmp-(\d+)-", os.path.basename(output_dir.rstrip(os.sep)))
  return faults.get(match.group(1)) if faults and match else None


class FakeTrtBackendForTests:
  """TEST DOUBLE for `tftrt_keras.trt_convert.TfTrtBackend`."""

  name = "fake_tftrt_for_tests"

  def unavailable_reason(self):
    return None

  def environment(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return {"tensorflow": tf.__version__, "tensorrt_linked": None, "tensorrt_loaded": None, "gpu": [],
            "backend": "FakeTrtBackendForTests (test double, not TensorRT)"}

  def convert(self, saved_model_dir, signature_key, precision, options, calibration_batches, build_batches,
              output_dir):
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if os.environ.get("FAKE_TRT_FAIL", "").upper() == precision:
      raise RuntimeError(f"FakeTrtBackendForTests: injected failure for {precision}")
    loaded = tf.saved_model.load(saved_model_dir)
    perturb = float(os.environ.get("FAKE_TRT_PERTURB", "0") or 0)
    only = [p.strip().upper() for p in os.environ.get("FAKE_TRT_PERTURB_PRECISIONS", "").split(",") if p.strip()]
    if perturb and (not only or precision in only):
      # Seed 0 draws the same numbers as tests/saved_models.classifier(seed=0)'s weights, so perturbing that
      # model only rescales it: tests that need changed decisions build their model with another seed.
      rng = np.random.default_rng(0)
      for variable in loaded.signatures[signature_key].variables:
        if variable.dtype.is_floating:
          variable.assign_add(perturb * rng.standard_normal(variable.shape).astype(variable.dtype.as_numpy_dtype))
    # Write a first file, then (optionally) stall or crash while the variant is half-written.
    with open(os.path.join(output_dir, "PARTIAL_WRITE_MARKER"), "w") as f:
      f.write("half-written variant")
    started = os.environ.get("FAKE_TRT_STARTED_FILE")
    if started:
      with open(started, "w") as f:
        f.write(str(os.getpid()))
    crash = os.environ.get("FAKE_TRT_CRASH") or _fault_for_version(output_dir)
    if crash == "hang":
      while True:
        time.sleep(1)
    if crash:
      os.kill(os.getpid(), getattr(signal, crash))
    time.sleep(float(os.environ.get("FAKE_TRT_SLEEP_SECONDS", "0") or 0))
    release = os.environ.get("FAKE_TRT_RELEASE_FILE")
    while release and not os.path.exists(release):
      time.sleep(0.05)
    os.remove(os.path.join(output_dir, "PARTIAL_WRITE_MARKER"))
    tf.saved_model.save(loaded, output_dir, signatures={signature_key: loaded.signatures[signature_key]})

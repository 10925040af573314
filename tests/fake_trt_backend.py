"""TEST DOUBLE. A stand-in for the TF-TRT converter, for tests only; the product never uses it.

TF-TRT cannot run on machines without TensorRT and a GPU, so tests that need a "converted variant" on disk
(verification, fault injection, layout) put it in TF-TRT's place through the format's test hook, the
environment variable `TFTRT_KERAS_TEST_TFTRT_CONVERTER` (the `fake_tftrt` fixture in conftest.py). It does not convert anything:
it re-saves the normal export's signature as a SavedModel, optionally with its float variables perturbed, and
it can be told to misbehave. Its behaviour comes from environment variables, because it runs inside the
export worker (a child process) that inherits the test's environment:

  FAKE_TRT_PERTURB=<scale>            add scale * N(0,1) noise to every float variable (a "lossy" variant)
  FAKE_TRT_PERTURB_PRECISIONS=INT8,.. perturb only these precisions (default: all)
  FAKE_TRT_SLEEP_SECONDS=<s>          sleep after writing half the variant (to kill it mid-write)
  FAKE_TRT_FAIL=<precision>,..        raise RuntimeError for these precisions
  FAKE_TRT_FAIL_AS=<precision>:<name>,..  raise that builtin exception (e.g. FP16:TypeError, a bug) instead
  FAKE_TRT_CRASH=<signal name>        the worker kills itself with that signal mid-write (SIGSEGV, SIGABRT)
  FAKE_TRT_STARTED_FILE=<path>        write the worker's pid to this file once the variant's temp directory
                                      has content (a test waits for it to strike mid-write)
  FAKE_TRT_FAULT_BY_VERSION=1:SIGSEGV,2:hang,...
                                      per export version (read from the temp directory's name), mid-write:
                                      kill the worker with that signal, or `hang` until something kills it
  FAKE_TRT_RELEASE_FILE=<path>        after writing half the variant, block until this file exists (a worker
                                      held mid-write for as long as a test needs, without timing guesses)
  FAKE_TRT_ENGINES=<n>                TRTEngineOps the made-up conversion reports (default 1; 0 = TF-TRT found no
                                      segment, which the format must record as `failed`)
  FAKE_TRT_SERIALIZED=<n>             of those, how many get an engine file in assets/ (default: all; 0 = every
                                      engine build "failed")

What it reports is what a TF-TRT conversion reports: a summary dict (`convert`'s return value, invented numbers,
marked "test_double") and, when it was given build batches, one `assets/trt-serialized-engine.<op>` file per
serialized engine in TF-TRT's own format (a TFRecord of `TRTEngineInstance` protos holding the input shapes of
the first build batch, as TF-TRT's dynamic-shape cache keys them) whose "engine" bytes are a marker string, not
a TensorRT plan. The product reads those files back (`trt_convert.read_engine_assets`); the encoder here is
written independently of that reader on purpose.
"""

import builtins
import os
import re
import signal
import time

FAKE_REASON = "unused"
FAKE_ENGINE_BYTES = b"FAKE TENSORRT ENGINE (test double, not a TensorRT plan)"


def _varint(value):
  out = bytearray()
  while True:
    byte, value = value & 0x7F, value >> 7
    out.append(byte | (0x80 if value else 0))
    if not value:
      return bytes(out)


def encode_engine_instance(input_shapes, engine=FAKE_ENGINE_BYTES):
  """A serialized `TRTEngineInstance` (field 1: repeated TensorShapeProto, field 2: bytes), by wire format."""
  from tensorflow.core.framework import tensor_shape_pb2  # pylint: disable=g-import-not-at-top
  out = b""
  for shape in input_shapes:
    proto = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape])
    payload = proto.SerializeToString()
    out += b"\x0a" + _varint(len(payload)) + payload
  return out + b"\x12" + _varint(len(engine)) + engine


def write_engine_asset(saved_model_dir, engine_name, records):
  """Writes `assets/trt-serialized-engine.<engine_name>` as TF-TRT does: a TFRecord file (TensorFlow's own
  writer) of serialized `TRTEngineInstance` records."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  assets = os.path.join(saved_model_dir, "assets")
  os.makedirs(assets, exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(assets, "trt-serialized-engine." + engine_name)) as writer:
    for record in records:
      writer.write(record)


def _int_env(name, default):
  value = os.environ.get(name, "")
  return int(value) if value.strip() else default


def _fault_for_version(output_dir):
  """The FAKE_TRT_FAULT_BY_VERSION entry for the version being written (temp dirs are `.tmp-<version>-...`)."""
  faults = dict(item.split(":", 1) for item in os.environ.get("FAKE_TRT_FAULT_BY_VERSION", "").split(",") if item)
  match = re.match(r"\.tmp-(\d+)-", os.path.basename(output_dir.rstrip(os.sep)))
  return faults.get(match.group(1)) if faults and match else None


class FakeTrtBackendForTests:
  """TEST DOUBLE for `tftrt_keras.formats.tftrt.convert.TfTrtBackend`."""

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
    if precision in [p.strip().upper() for p in os.environ.get("FAKE_TRT_FAIL", "").split(",")]:
      kinds = dict(item.split(":", 1) for item in os.environ.get("FAKE_TRT_FAIL_AS", "").split(",") if item)
      raise getattr(builtins, kinds.get(precision, "RuntimeError"))(
          f"FakeTrtBackendForTests: injected failure for {precision}")
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
    return self._report(output_dir, build_batches)

  @staticmethod
  def _report(output_dir, build_batches):
    """The made-up conversion's summary, and its engine files (only when engines were "built")."""
    engines = _int_env("FAKE_TRT_ENGINES", 1)
    serialized = min(_int_env("FAKE_TRT_SERIALIZED", engines), engines)
    names = [f"TRTEngineOp_000_{i:03d}" for i in range(engines)]
    if build_batches:
      first = build_batches[0]
      shapes = [list(first[name].shape) for name in sorted(first)]
      for name in names[:serialized]:
        write_engine_asset(output_dir, name, [encode_engine_instance(shapes)])
    return {"trt_engine_ops": engines, "segments": engines, "ops_converted": 4 * engines,
            "ops_in_tensorflow": 3 if engines else 7, "converted_op_types": {"MatMul": engines, "AddV2": engines,
                                                                            "Softmax": engines, "Identity": engines},
            "trt_engine_ops_saved": names, "test_double": "FakeTrtBackendForTests: invented numbers, nothing converted"}

"""TensorRT-RTX's own verdict on plans on this machine's GPU 0, before deserializing, printed as JSON.

    PYTHONPATH=. python scripts/gpu_rtx_validity.py PLAN_DIR [PLAN_DIR ...] [--out out.json]
    PYTHONPATH=. python scripts/gpu_rtx_validity.py --build DIR   # builds the plans (no GPU needed), then stops

`--build` writes a small convolution's TensorRT-RTX plans (the portable default, and SM80 only), each a
`trt_rtx` variant directory (model.plan + model.json), with the library's own builder. On a GPU, for each plan:
`build.engine_validity` (IRuntime.get_engine_validity: VALID / SUBOPTIMAL / INVALID and the diagnostics, which
read only the plan's header), then whether TensorRT-RTX deserializes it (`build.LoadedEngine`) and what it says,
and what the `trt_rtx` format's `open_runner` answers. Also what TensorRT-RTX does there with a timing cache it
cannot read (create_timing_cache of garbage bytes). Needs no TensorFlow.
"""

import json
import os
import sys
import warnings

EDITION = "tensorrt_rtx"


def build_plans(directory):
  from tests import engine_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tensorrt import build  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tensorrt.variant import write_variant  # pylint: disable=g-import-not-at-top
  onnx_dir = engine_models.conv_relu(os.path.join(directory, "onnx_fp32"))
  for name, targets in (("portable", None), ("sm80", ("SM80",))):
    built = build.build_engine(os.path.join(onnx_dir, "model.onnx"),
                               build.BuildSettings("FP32", 1 << 28, use_timing_cache=False,
                                                   compute_capabilities=targets),
                               engine_models.conv_relu_profile(), EDITION)
    out = os.path.join(directory, name)
    os.makedirs(out, exist_ok=True)
    plan_targets = ["8.6", "8.9", "12.0"] if targets is None else ["8.0"]
    write_variant(out, built.plan, {"format": "trt_rtx", "tensorrt_version": built.tensorrt_version,
                                    "compute_capabilities": {"asked": "portable" if targets is None else list(targets),
                                                             "targets": plan_targets},
                                    "builder": built.builder, "engine_bytes": len(built.plan)})
    print(f"built {out}: {len(built.plan)} bytes for compute capability {', '.join(plan_targets)}")


def check_plan(path):
  from tftrt_keras.formats.base import RunnerUnavailable  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tensorrt import build, rtx  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tensorrt.log import recording  # pylint: disable=g-import-not-at-top
  with open(os.path.join(path, "model.plan"), "rb") as f:
    plan = f.read()
  result = {"plan": path, "bytes": len(plan)}
  validity = build.engine_validity(plan, EDITION)
  result["engine_validity"] = None if validity is None else {"validity": validity[0], "diagnostics": validity[1],
                                                             "said": validity[2]}
  trt = build.import_tensorrt(EDITION)
  with recording(trt, "TensorRT-RTX") as log:
    try:
      engine = build.LoadedEngine(plan, EDITION)
      result["deserialized"] = True
      engine.close()
    except Exception as err:  # pylint: disable=broad-except
      result["deserialized"] = f"{type(err).__name__}: {err}"
    result["deserialize_said"] = list(log.lines)

  class _Job:
    signature = None
  try:
    rtx.FORMAT.open_runner(path, _Job()).close()
    result["open_runner"] = "opened"
  except RunnerUnavailable as err:
    result["open_runner"] = f"RunnerUnavailable: {err}"
  return result


def timing_cache_on_a_gpu():
  from tftrt_keras.formats.tensorrt import build  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tensorrt.log import process_logger, recording  # pylint: disable=g-import-not-at-top
  trt = build.import_tensorrt(EDITION)
  with recording(trt, "TensorRT-RTX") as log, warnings.catch_warnings():
    warnings.simplefilter("ignore")
    config = trt.Builder(process_logger(trt)).create_builder_config()
    result = {"get_timing_cache_on_a_fresh_config": repr(config.get_timing_cache())}
    try:
      cache = config.create_timing_cache(b"not a timing cache" * 8)
      result["create_from_garbage"] = "None" if cache is None else "a cache object"
    except Exception as err:  # pylint: disable=broad-except
      result["create_from_garbage"] = f"raised {type(err).__name__}: {err}"
      cache = None
    if cache is not None:
      result["set_timing_cache"] = bool(config.set_timing_cache(cache, ignore_mismatch=False))
    result["said"] = list(log.lines)
  return result


def main(argv):
  warnings.simplefilter("ignore", DeprecationWarning)
  if argv[1:2] == ["--build"]:
    build_plans(argv[2])
    return 0
  out = None
  if "--out" in argv:
    out = argv[argv.index("--out") + 1]
    argv = argv[:argv.index("--out")]
  from tftrt_keras.formats.tensorrt import cuda_devices, format as trt_format  # pylint: disable=g-import-not-at-top
  status = trt_format.probe(edition=EDITION)
  report = {"tensorrt_rtx": status.tensorrt_version, "tensorrt_rtx_error": status.tensorrt_error,
            "cuda_python": status.cuda_python_version, "gpus": [g.to_json() for g in status.gpus]}
  try:
    cuda_devices.set_device(0)
  except cuda_devices.CudaUnavailable as err:  # still worth running: what TensorRT-RTX says without a GPU
    report["no_gpu"] = str(err)
  report["plans"] = [check_plan(path) for path in argv[1:]]
  report["timing_cache"] = timing_cache_on_a_gpu()
  text = json.dumps(report, indent=1)
  print(text)
  if out:
    with open(out, "w") as f:
      f.write(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))

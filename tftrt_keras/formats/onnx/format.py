"""ONNX models (`onnx_fp32`, `onnx_fp16`, `onnx_int8`): the route to TensorRT from every TensorFlow line.

    native --tf2onnx--> onnx_fp32 --onnxconverter-common--> onnx_fp16
                                  --ONNX Runtime quantize_static (symmetric Q/DQ, zero point 0)--> onnx_int8

Precision lives in the model itself (TensorRT 11 has no implicit INT8 calibrators). Each version directory holds
`model.onnx` and `model.json`; everything runs on a CPU-only machine.

`model.json` (read by the Triton helper: add fields, never change them): format "onnx", precision, artifact,
file, opset, ir_version, signature_key, inputs/outputs [{"name", "dtype", "shape"}] in the signature's terms
(FP32 at every precision, null for dynamic dims, sorted by name), outputs_left_out {name: why}, source_version,
built_from, tools {package: version}; FP32 of a mixed-precision graph: computes_in, mixed_precision (see `mixed`);
FP16: fp16 {"kept_fp32", "block_list", "fp16_nodes"}; INT8: int8 {"settings", "calibration_samples",
"quantized_ops", "ops_total", "qdq_nodes", "kept_fp32", "zero_points", "fallback" (see `int8_fallback`)}.
"""

import dataclasses
import json
import numbers
import os
import tempfile

from tftrt_keras.errors import invalid_argument
from tftrt_keras.formats.base import (METADATA_FILE, NATIVE, Format, TritonServing, VariantFailed, VariantUnavailable,
                                     artifact_name, tensorflow_version)
from tftrt_keras.formats.onnx.runner import MODEL_FILE, OnnxRuntimeRunner, session_options

# tf2onnx 1.17 writes opsets 7-18. 17 is the newest that TensorRT 8.6 (the one pip TF 2.15-2.17 load) parses
# too, TensorRT 10 and ONNX Runtime 1.32 take it, and it has LayerNormalization. Below 13 there is no
# per-channel QuantizeLinear, which INT8 needs.
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 13, 18
INSTALL_HINT = "pip install 'tftrt_keras[onnx]'"
# Distribution name -> module name of what the ONNX variants import.
PACKAGES = {"tf2onnx": "tf2onnx", "onnx": "onnx", "onnxruntime": "onnxruntime",
            "onnxconverter-common": "onnxconverter_common"}
_ARGUMENT = "format_options['onnx']"


@dataclasses.dataclass(frozen=True)
class OnnxOptions:
  """Options of the `onnx` format (`ConversionOptions(format_options={"onnx": {...}})`).

  Attributes:
    opset: ONNX opset tf2onnx targets (13-18; default 17, see `DEFAULT_OPSET`).
    int8_calibration: "auto" (default: MinMax, and Percentile too when MinMax misses the gate on the
      calibration-side hold-out; the better one is kept), "minmax" or "percentile" (clip each activation range
      at `percentile`). No Entropy: through `quantize_static` it equals MinMax or wrecks MobileNetV2.
    percentile: the percentile kept by "percentile" calibration, in (0, 100] (default 99.999).
    int8_search_budget: when plain INT8 misses the gate, the search for layers to keep FP32 may take this many
      times the plain INT8 build's seconds (default 5; 0: no search).
    fp16_keep_fp32_ops: more ONNX op types to keep FP32 in `onnx_fp16` (e.g. ("Sigmoid",)).
  """

  opset: int = DEFAULT_OPSET
  int8_calibration: str = "auto"
  percentile: float = 99.999
  int8_search_budget: float = 5.0
  fp16_keep_fp32_ops: tuple = ()

  def __post_init__(self):
    if (isinstance(self.opset, bool) or not isinstance(self.opset, numbers.Integral)
        or not MIN_OPSET <= self.opset <= MAX_OPSET):
      raise invalid_argument(f"{_ARGUMENT}.opset", self.opset, f"an integer from {MIN_OPSET} to {MAX_OPSET}",
                             hint="tf2onnx 1.17 writes opsets up to 18; per-channel INT8 needs 13.")
    from tftrt_keras.formats.onnx.quantize import CALIBRATION_METHODS  # pylint: disable=g-import-not-at-top
    methods = ("auto",) + CALIBRATION_METHODS
    method = self.int8_calibration.lower() if isinstance(self.int8_calibration, str) else None
    if method not in methods:
      hint = ("Entropy is not offered: through ONNX Runtime's quantize_static it equals MinMax, or with 2048 "
              "bins destroys accuracy." if method == "entropy" else None)
      raise invalid_argument(f"{_ARGUMENT}.int8_calibration", self.int8_calibration,
                             f"one of {methods}", hint=hint)
    object.__setattr__(self, "int8_calibration", method)
    if (isinstance(self.percentile, bool) or not isinstance(self.percentile, numbers.Real)
        or not 0 < self.percentile <= 100):
      raise invalid_argument(f"{_ARGUMENT}.percentile", self.percentile, "a number in (0, 100], e.g. 99.999")
    budget = self.int8_search_budget
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not 0 <= budget <= 1000:
      raise invalid_argument(f"{_ARGUMENT}.int8_search_budget", budget,
                             "a number from 0 to 1000: times the plain INT8 build's seconds (default 5; 0: no search)")
    ops = self.fp16_keep_fp32_ops
    if isinstance(ops, str) or not isinstance(ops, (list, tuple)) or not all(isinstance(o, str) and o for o in ops):
      raise invalid_argument(f"{_ARGUMENT}.fp16_keep_fp32_ops", ops, "a tuple of ONNX op type names, e.g. ('Exp',)")
    from tftrt_keras.formats.onnx.fp16 import NOT_KEEPABLE  # pylint: disable=g-import-not-at-top
    if NOT_KEEPABLE & set(ops):
      raise invalid_argument(f"{_ARGUMENT}.fp16_keep_fp32_ops", ops, f"op types without subgraphs (not "
                             f"{', '.join(sorted(NOT_KEEPABLE & set(ops)))})",
                             hint="onnxconverter-common cannot keep a node with a subgraph in FP32 (its body's reads "
                                  "of outer tensors stay FP16); name the ops inside the body instead, e.g. "
                                  "('MatMul', 'Sigmoid', 'Tanh').")
    object.__setattr__(self, "fp16_keep_fp32_ops", tuple(ops))


# --- is it installed? ----------------------------------------------------------------------------------------

def import_failure_reason(failures):
  """The one line `unavailable_reason` says for {distribution: the exception importing it raised}.

  A package that is there but fails to import is named with its error: onnx 1.19+ needs an ml_dtypes with
  `float4_e2m1fn`, which TensorFlow 2.15-2.17 cannot have, and pip installs it anyway.
  """
  if not failures:
    return None
  missing = sorted(name for name, err in failures.items() if isinstance(err, ModuleNotFoundError))
  broken = {name: err for name, err in failures.items() if name not in missing}
  parts = []
  if missing:
    parts.append(f"{', '.join(missing)} not installed: {INSTALL_HINT}")
  for name, err in sorted(broken.items()):
    if "float4_e2m1fn" in str(err):
      parts.append(f"{name} fails to import with this TensorFlow's ml_dtypes ({type(err).__name__}: {err}); onnx "
                   "1.19 and later need an ml_dtypes TensorFlow 2.15-2.17 cannot have: pip install 'onnx==1.18.0'")
    else:
      parts.append(f"{name} fails to import ({type(err).__name__}: {err}); reinstall it: {INSTALL_HINT}")
  return "ONNX variants need tf2onnx, onnx, onnxruntime and onnxconverter-common; " + "; ".join(parts)


def _import_failures():
  import importlib  # pylint: disable=g-import-not-at-top
  failures = {}
  for distribution, module in PACKAGES.items():
    try:
      importlib.import_module(module)
    except Exception as err:  # pylint: disable=broad-except
      failures[distribution] = err
  return failures


def tool_versions():
  """Installed versions of TensorFlow and the ONNX tools (None for a missing one), without importing them."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  versions = {"tensorflow": tensorflow_version()}
  for distribution in PACKAGES:
    try:
      versions[distribution] = metadata.version(distribution)
    except metadata.PackageNotFoundError:
      versions[distribution] = None
  return versions


# --- the format ----------------------------------------------------------------------------------------------

def _write_metadata(directory, metadata):
  with open(os.path.join(directory, METADATA_FILE), "w", encoding="utf-8") as f:
    json.dump(metadata, f, indent=2, sort_keys=True)
    f.write("\n")


def _default_opset(model):
  return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


class OnnxFormat(Format):
  name = "onnx"
  description = "ONNX model (model.onnx + model.json)"
  options_class = OnnxOptions
  model_file = MODEL_FILE
  serving = TritonServing(platform="onnxruntime_onnx")

  def source_of(self, precision):
    return NATIVE if precision == "FP32" else artifact_name("onnx", "FP32")

  def unavailable_reason(self, options):
    del options
    return import_failure_reason(_import_failures())

  def environment(self, options):
    del options
    versions = tool_versions()
    versions.pop("tensorflow")
    return versions

  def build(self, job, precision, source_dir, output_dir):
    options = job.format_options(self.name)
    if precision == "INT8" and job.calibration_samples() is None:
      # Before any work: without samples there is nothing to calibrate on.
      raise VariantUnavailable("INT8 needs calibration data and this export has none: pass calibration_data "
                               "(or let TrtExport/TrtExporter capture calibration batches)")
    from tftrt_keras.formats.onnx import convert as onnx_convert  # pylint: disable=g-import-not-at-top
    model_path = os.path.join(output_dir, MODEL_FILE)
    signature, left_out = onnx_convert.convertible_signature(job.signature)
    metadata = {
        "format": self.name, "precision": precision, "artifact": artifact_name(self.name, precision),
        "file": MODEL_FILE, "signature_key": job.signature_key,
        "inputs": [dict(t) for t in signature["inputs"]], "outputs": [dict(t) for t in signature["outputs"]],
        "source_version": job.version, "built_from": self.source_of(precision), "tools": tool_versions(),
    }
    if left_out:
      metadata["outputs_left_out"] = left_out
    if job.split:  # its inputs are the cut tensors a TF front computes (see `formats.split_graph`)
      metadata["split"] = {"cut": [t["name"] for t in job.split["plan"]["cut"]], "front": job.split["front_dir"]}
    details = {}
    if precision == "FP32":
      metadata["conversion_routes"] = routes = {}  # which shortcut ran, or why tf2onnx's own route did
      trained = self._build_fp32(job, signature, options, model_path, routes)
      if trained:  # mixed precision, read from the graph
        metadata["computes_in"], metadata["mixed_precision"] = trained["computes_in"], trained
    elif precision == "FP16":
      metadata["fp16"] = details = self._build_fp16(options, source_dir, model_path, job.calibration_samples())
    else:
      metadata["int8"] = details = self._build_int8(job, options, source_dir, model_path)
    import onnx  # pylint: disable=g-import-not-at-top
    model = onnx.load(model_path)
    metadata["opset"], metadata["ir_version"] = _default_opset(model), model.ir_version
    _check_loads_in_onnxruntime(model_path, precision)
    _write_metadata(output_dir, metadata)
    entry = {"opset": metadata["opset"], "file_bytes": os.path.getsize(model_path), "nodes": len(model.graph.node)}
    if left_out:
      entry["outputs_left_out"] = left_out
    fell_back = {k: v for k, v in metadata.get("conversion_routes", {}).items() if not v.startswith("shortcut")}
    if fell_back:  # slower, same result; said where a user looks
      entry["conversion_fallback"] = fell_back
    if job.split:  # verification and serving run it behind the TF front
      entry["after_front"] = "front"
    if metadata.get("mixed_precision"):
      entry.update(computes_in=metadata["computes_in"], mixed_precision=metadata["mixed_precision"]["note"])
    if precision == "FP16":
      entry.update(kept_fp32=sorted(details["kept_fp32"]), fp16_nodes=details["fp16_nodes"])
    elif precision == "INT8":
      entry.update(quantized_ops=details["quantized_ops"], int8_kept_fp32=details["kept_fp32"],
                   calibration=details["settings"]["calibration"],
                   calibration_samples=details["calibration_samples"])
      fallback = details["fallback"]
      entry["int8_fallback"] = {"searched": fallback["searched"], "kept": len(fallback.get("kept", ())),
                                "holdout_before": fallback.get("before", {}).get("outputs"),
                                "holdout_after": fallback.get("after", {}).get("outputs")}
    return entry

  def _build_fp32(self, job, signature, options, model_path, routes):
    import onnx  # pylint: disable=g-import-not-at-top
    from tftrt_keras.formats.onnx import convert as onnx_convert  # pylint: disable=g-import-not-at-top
    from tftrt_keras.formats.onnx import mixed  # pylint: disable=g-import-not-at-top
    refused = mixed.bfloat16_io(signature)
    if refused:
      raise VariantFailed(refused)
    try:
      if job.split:
        model = _convert_back(job.split, signature, options.opset, routes)
      else:
        model = onnx_convert.convert_saved_model(job.native_dir, job.signature_key, signature, options.opset,
                                                 routes)
    except onnx_convert.ConversionError as err:
      raise VariantFailed(str(err)) from err
    compute = mixed.low_precision_compute(model)
    if compute and compute["dtype"] == "bfloat16":
      model = mixed.float32_view(model)
    onnx.save(model, model_path)
    if not compute:
      return None
    computes_in = "float32" if compute["dtype"] == "bfloat16" else "float16"
    return dict(compute, computes_in=computes_in, note=mixed.note(compute))

  def _build_fp16(self, options, source_dir, model_path, samples):
    import onnx  # pylint: disable=g-import-not-at-top
    from tftrt_keras.formats.onnx import fp16 as onnx_fp16  # pylint: disable=g-import-not-at-top
    from tftrt_keras.formats.onnx import mixed  # pylint: disable=g-import-not-at-top
    source = onnx.load(os.path.join(source_dir, MODEL_FILE))
    details = {}
    if mixed.has_low_precision(source):
      # A mixed-precision graph is converted from its float32 view: the FP16 model float32 training would give.
      details["converted_from"] = mixed.VIEW_WORDS
      view = mixed.float32_view(source)
      model, kept = onnx_fp16.convert_to_fp16(view, options.fp16_keep_fp32_ops, keep_nodes=mixed.edge_casts(view),
                                              check_fp16_ready=False, samples=samples)
    else:
      model, kept = onnx_fp16.convert_to_fp16(source, options.fp16_keep_fp32_ops, samples=samples)
    before, after = onnx_fp16.graph_io_dtypes(source), onnx_fp16.graph_io_dtypes(model)
    if before != after:
      raise VariantFailed(f"FP16 conversion changed the graph's input/output dtypes: {before} -> {after}")
    onnx.save(model, model_path)
    return dict(details, kept_fp32=kept, block_list=onnx_fp16.block_list(options.fp16_keep_fp32_ops),
                fp16_nodes=onnx_fp16.count_fp16_nodes(model))

  def _build_int8(self, job, options, source_dir, model_path):
    import onnx  # pylint: disable=g-import-not-at-top
    from tftrt_keras.formats.onnx import quantize as onnx_quantize  # pylint: disable=g-import-not-at-top
    samples = job.calibration_samples()
    names = {t["name"] for t in job.signature["inputs"]}
    if set(samples) != names:
      raise VariantFailed(f"the calibration samples hold {sorted(samples)}, the signature takes {sorted(names)}")
    dtypes = {t["name"]: t["dtype"] for t in job.signature["inputs"]}
    source_path = os.path.join(source_dir, MODEL_FILE)
    from tftrt_keras.formats.onnx import int8_fallback as onnx_int8_fallback  # pylint: disable=g-import-not-at-top
    from tftrt_keras.formats.onnx import mixed  # pylint: disable=g-import-not-at-top
    source = onnx.load(source_path)
    with tempfile.TemporaryDirectory(prefix="tftrt_float32_view_") as scratch:
      quantized_from = {}
      if mixed.has_low_precision(source):
        # Q/DQ at float32 points with float32 scales, as opset 17 and TensorRT take them: the float32 view.
        quantized_from["quantized_from"] = mixed.VIEW_WORDS
        source_path = os.path.join(scratch, MODEL_FILE)
        onnx.save(mixed.float32_view(source), source_path)
      try:
        result = onnx_int8_fallback.build_int8(source_path, model_path, samples, dtypes, job.options, options)
      except onnx_quantize.QuantizationError as err:
        raise VariantFailed(str(err)) from err
    result.update(quantized_from)
    result["ops_total"] = onnx_quantize.total_op_counts(source)
    result["zero_points"] = "all 0"
    return result

  def open_runner(self, path, job):
    del job
    return OnnxRuntimeRunner(path)


def _convert_back(split, signature, opset, routes):
  """The back of a split model (`BuildJob.split`): its frozen graph from the cut tensors to the numeric outputs."""
  from tftrt_keras.formats import split_graph  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import convert as onnx_convert  # pylint: disable=g-import-not-at-top
  graph_def, inputs, outputs, renames = split_graph.back_graph(split["frozen_dir"], split["plan"])
  wanted = {t["name"] for t in signature["outputs"]}
  outputs = [o for o in outputs if renames[o] in wanted]
  return onnx_convert.convert_graph_def(graph_def, inputs, outputs, renames, signature, opset,
                                        f"the numeric back of {split['frozen_dir']}, from its cut", routes)


def _check_loads_in_onnxruntime(model_path, precision):
  """A model ONNX Runtime cannot load (a missing kernel, a bad graph) is no variant, verified or not."""
  import onnxruntime  # pylint: disable=g-import-not-at-top
  try:
    onnxruntime.InferenceSession(model_path, sess_options=session_options(), providers=["CPUExecutionProvider"])
  except Exception as err:  # pylint: disable=broad-except
    raise VariantFailed(f"ONNX Runtime cannot load the {precision} model: {type(err).__name__}: {err}") from err


FORMAT = OnnxFormat()

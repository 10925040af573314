"""FP32 ONNX -> INT8 by explicit quantization: QuantizeLinear/DequantizeLinear pairs, as TensorRT wants them.

ONNX Runtime's `quantize_static` in QDQ format, set up for TensorRT: Q/DQ only on the inputs of Conv,
ConvTranspose, MatMul and Gemm (never outputs or biases); symmetric INT8 (every zero point 0, checked after
quantizing), per-channel weights; a Q/DQ pair per consumer; MinMax or Percentile calibration (Entropy equals
MinMax through `quantize_static`). MatMul/Gemm whose constant weight has a dimension below 16 stay FP32, as
NVIDIA ModelOpt does (`_MIN_MATMUL_DIM`): INT8 buys nothing there and costs accuracy right before the decision.
"""

import contextlib
import io

from tftrt_keras.quiet_console import logger_at_error

QUANTIZED_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
CALIBRATION_METHODS = ("minmax", "percentile")
QDQ_OP_TYPES = ("QuantizeLinear", "DequantizeLinear")
MIN_MATMUL_DIM = 16


class QuantizationError(Exception):
  """The quantized model is not what TensorRT takes (e.g. a non-zero zero point); the message says which."""


def small_matmuls(model, min_dim=MIN_MATMUL_DIM):
  """{node name: why} of MatMul/Gemm nodes with a constant 2-D weight that has a dimension below `min_dim`."""
  constants = _constants(model)
  small = {}
  for node in model.graph.node:
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or not node.name:
      continue
    weight = constants.get(node.input[1])
    if weight is not None and weight.ndim == 2 and min(weight.shape) < min_dim:
      small[node.name] = (f"{node.op_type} weight {weight.shape[0]}x{weight.shape[1]} has a dimension below "
                          f"{min_dim}: kept FP32, as NVIDIA ModelOpt keeps it")
  return small


def quantization_settings(calibration, percentile):
  """The settings this module quantizes with, as recorded in `model.json` (plain JSON)."""
  settings = {
      "tool": "onnxruntime.quantization.quantize_static",
      "quant_format": "QDQ",
      "activation_type": "int8",
      "weight_type": "int8",
      "activations": "symmetric, per tensor",
      "weights": "symmetric, per channel",
      "op_types_quantized": list(QUANTIZED_OP_TYPES),
      "matmul_min_dim": MIN_MATMUL_DIM,
      "outputs_quantized": False,
      "bias_quantized": False,
      "calibration": calibration,
  }
  if calibration == "percentile":
    settings["percentile"] = percentile
  return settings


def _extra_options(calibration, percentile):
  options = {
      "ActivationSymmetric": True,
      "WeightSymmetric": True,
      "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OP_TYPES),
      "QuantizeBias": False,
      "DedicatedQDQPair": True,
      # Keep Relu/Clip where they are; ORT would drop "removable" activations that TensorRT still needs once
      # it moves the Q/DQ nodes (only happens with asymmetric activations, but says what we rely on).
      "QDQKeepRemovableActivations": True,
  }
  if calibration == "percentile":
    options["CalibPercentile"] = float(percentile)
  return options


class _SamplesReader:
  """ONNX Runtime's CalibrationDataReader over {input name: array}, a few samples per call."""

  def __init__(self, samples, dtypes, batch_size=32, equal_batches=False):
    import numpy as np  # pylint: disable=g-import-not-at-top
    total = len(next(iter(samples.values())))
    if equal_batches and total > batch_size:
      # ORT 1.32's histogram calibrators stack the batches' outputs into one array: a shorter last batch makes
      # that ragged and fails ("inhomogeneous shape"). Drop the remainder (fewer than batch_size samples).
      total -= total % batch_size
    self.samples_used = total
    self._batches = [{name: np.asarray(value[start:start + batch_size]).astype(dtypes.get(name, value.dtype))
                      for name, value in samples.items()} for start in range(0, total, batch_size)]
    self._next = iter(self._batches)

  def get_next(self):
    return next(self._next, None)

  def rewind(self):
    self._next = iter(self._batches)


def quantize_int8(fp32_path, output_path, samples, input_dtypes, calibration="minmax", percentile=99.999,
                  batch_size=32, keep_fp32=None, calibration_cache=None):
  """Writes the INT8 Q/DQ model of the FP32 ONNX model at `fp32_path` to `output_path`.

  Args:
    fp32_path, output_path: the `onnx_fp32` model file and where the quantized model goes.
    samples: {graph input name: array} calibration samples, samples along axis 0.
    input_dtypes: {graph input name: numpy dtype} to cast the samples to.
    calibration: "minmax" or "percentile"; percentile: the percentile kept (e.g. 99.999).
    batch_size: samples per calibration run.
    keep_fp32: {node name: why} of more nodes to leave unquantized (the INT8 fallback's choice).
    calibration_cache: JSON file of ONNX Runtime's calibration ranges, reused by later calls with the same
      samples and method, where ONNX Runtime supports it.

  Returns:
    {"quantized_ops", "qdq_nodes", "settings", "calibration_samples"}.

  Raises:
    QuantizationError: a Q/DQ zero point is not 0, or nothing was quantized.
  """
  from onnxruntime import quantization as ort_quant  # pylint: disable=g-import-not-at-top
  method = {"minmax": ort_quant.CalibrationMethod.MinMax,
            "percentile": ort_quant.CalibrationMethod.Percentile}[calibration]
  import onnx  # pylint: disable=g-import-not-at-top
  fp32_model = onnx.load(str(fp32_path))
  kept_fp32 = small_matmuls(fp32_model)
  if len(kept_fp32) == sum(total_op_counts(fp32_model).values()):
    # Nothing else to quantize (a tiny model): an INT8 variant was asked for, so the small layers are it.
    kept_fp32 = {}
  kept_fp32.update(keep_fp32 or {})
  cache = {"calibration_cache_path": str(calibration_cache)} if calibration_cache and _has_cache_option() else {}
  reader = _SamplesReader(samples, input_dtypes, batch_size, equal_batches=calibration != "minmax")
  # ORT's quantizer warns on the root logger to run `quant_pre_process` first. Measured here on MobileNetV2 it
  # did not help this Q/DQ scheme (top-1 agreement 0.377 with it, 0.380 without; tf2onnx already folds
  # BatchNorm into Conv), so it is not run and its advice is noise in a worker log.
  # ORT's histogram calibrators also print() their progress ("Finding optimal threshold ..."): not for a log.
  with logger_at_error(), contextlib.redirect_stdout(io.StringIO()):
    ort_quant.quantize_static(
        str(fp32_path), str(output_path), reader,
        quant_format=ort_quant.QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=True,
        reduce_range=False, activation_type=ort_quant.QuantType.QInt8, weight_type=ort_quant.QuantType.QInt8,
        calibrate_method=method, nodes_to_exclude=sorted(kept_fp32),
        extra_options=_extra_options(calibration, percentile), **cache)
  model = onnx.load(str(output_path))
  nonzero = nonzero_zero_points(model)
  if nonzero:
    raise QuantizationError("TensorRT takes only zero point 0, but these Q/DQ nodes have others: "
                            + ", ".join(nonzero[:10]) + (" ..." if len(nonzero) > 10 else ""))
  quantized = quantized_op_counts(model)
  if not quantized:
    raise QuantizationError(f"no {'/'.join(QUANTIZED_OP_TYPES)} node was quantized: the model has none "
                            "(or none with a constant weight), so INT8 would be FP32 with extra nodes")
  return {"quantized_ops": quantized, "qdq_nodes": qdq_node_counts(model), "kept_fp32": kept_fp32,
          "settings": quantization_settings(calibration, percentile), "calibration_samples": reader.samples_used}


def _has_cache_option():
  """Whether this ONNX Runtime's quantize_static can reuse calibration ranges from a file (1.32 can; 1.20 not)."""
  import inspect  # pylint: disable=g-import-not-at-top
  from onnxruntime import quantization as ort_quant  # pylint: disable=g-import-not-at-top
  return "calibration_cache_path" in inspect.signature(ort_quant.quantize_static).parameters


def _constants(model):
  from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  values = {init.name: init for init in model.graph.initializer}
  for node in model.graph.node:
    if node.op_type == "Constant":
      for attribute in node.attribute:
        if attribute.name == "value":
          values[node.output[0]] = attribute.t
  return {name: numpy_helper.to_array(tensor) for name, tensor in values.items()}


def nonzero_zero_points(model):
  """Names of the Q/DQ nodes whose zero point is not all zeros (a missing zero point means 0)."""
  constants = _constants(model)
  bad = []
  for node in model.graph.node:
    if node.op_type in QDQ_OP_TYPES and len(node.input) > 2 and node.input[2]:
      zero_point = constants.get(node.input[2])
      if zero_point is None or zero_point.any():
        bad.append(f"{node.name or node.output[0]} ({node.op_type})")
  return bad


def qdq_node_counts(model):
  counts = {}
  for node in model.graph.node:
    if node.op_type in QDQ_OP_TYPES:
      counts[node.op_type] = counts.get(node.op_type, 0) + 1
  return counts


def quantized_op_counts(model):
  """{op type: count} of Conv/ConvTranspose/MatMul/Gemm nodes whose first input comes from a DequantizeLinear."""
  dequantized = {node.output[0] for node in model.graph.node if node.op_type == "DequantizeLinear"}
  counts = {}
  for node in model.graph.node:
    if node.op_type in QUANTIZED_OP_TYPES and node.input and node.input[0] in dequantized:
      counts[node.op_type] = counts.get(node.op_type, 0) + 1
  return counts


def total_op_counts(model, op_types=QUANTIZED_OP_TYPES):
  counts = {}
  for node in model.graph.node:
    if node.op_type in op_types:
      counts[node.op_type] = counts.get(node.op_type, 0) + 1
  return counts

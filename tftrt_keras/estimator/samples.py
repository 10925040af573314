"""Where an Estimator export's samples come from: the evaluation pass (`CalibrationCaptureHook`) or
`calibration_input_fn`, turned into the inputs of the exported signature."""

import numpy as np
import tensorflow as tf

from tftrt_keras.estimator.calibration import CalibrationUnusable, serialize_examples, signature_of
from tftrt_keras.samples import by_name, calibration_data


class EvaluationSamples:
  """Calibration and verification batches for one exporter.

  Args:
    hook: the exporter's `CalibrationCaptureHook`.
    calibration_input_fn: None, or a callable returning batches (dicts of arrays, or (features, labels)).
    calibration_batches: at most this many batches from `calibration_input_fn` (0: no calibration).
    receiver_spec: zero-argument callable returning the serving input receiver's `ReceiverSpec`.
  """

  def __init__(self, hook, calibration_input_fn, calibration_batches, receiver_spec):
    self._hook = hook
    self._calibration_input_fn = calibration_input_fn
    self._calibration_batches = calibration_batches
    self._receiver_spec = receiver_spec
    # The evaluation labels of the last `collect`'s batches, batch for batch (None: unlabelled), for the
    # model's own metrics: (calibration batches' labels, verification batches' labels).
    self.last_labels = (None, None)

  def collect(self, native_dir, signature_key):
    """Calibration and verification batches keyed by the signature's input names, and where they came from.

    Returns:
      (calibration batches, verification batches or None (then a part of calibration is held out), origin for the
      manifest, the casts' manifest entries).

    Raises:
      CalibrationUnusable: with the reason the manifest records.
    """
    signature, tensor_names = signature_of(native_dir, signature_key)
    hook = self._hook
    self.last_labels = (None, None)
    if self._calibration_input_fn is not None:
      raw = self._batches_from_input_fn()
      if not raw:
        raise CalibrationUnusable("calibration_input_fn yielded no batches")
      origin = {"from": "calibration_input_fn", "batches": len(raw)}
    else:
      if self._calibration_batches == 0:
        return [], None, {"from": None}, []
      if hook.problem:
        raise CalibrationUnusable(hook.problem)
      if not hook.batches:
        raise CalibrationUnusable("no evaluation batches were captured: add exporter.calibration_hook to "
                                   "EvalSpec(hooks=[...]) or pass calibration_input_fn")
      raw = hook.batches
      self.last_labels = (_labels(hook.labels), None)
      origin = {"from": "evaluation", "eval_step": hook.global_step, "batch_indices": hook.indices,
                "batches_in_evaluation": hook.batches_seen}
    held_out = hook.verification_batches if not hook.problem else []
    if held_out:
      self.last_labels = (self.last_labels[0], _labels(hook.verification_labels))
      origin["verification"] = {"from": "evaluation", "eval_step": hook.global_step,
                                "batch_indices": hook.verification_indices,
                                "samples": sum(len(next(iter(b.values()))) for b in held_out),
                                "batches_in_evaluation": hook.batches_seen}
    report = by_name.CastReport()
    try:
      batches = self._as_signature_inputs(raw, signature, tensor_names, report)
      verification = self._as_signature_inputs(held_out, signature, tensor_names, report) if held_out else None
      calibration_data.check_against_signature(
          {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}, signature)
    except ValueError as err:
      raise CalibrationUnusable(f"the calibration batches do not fit the exported signature: {err}") from err
    return batches, verification, origin, report.entries()

  def _as_signature_inputs(self, raw, signature, tensor_names, report):
    """Batches keyed by the signature's input names and cast to its dtypes (`samples.by_name`)."""
    names = [t.name for t in signature.inputs]
    dtypes = {t.name: t.dtype for t in signature.inputs}
    argument = "calibration_input_fn" if self._calibration_input_fn is not None else "calibration_hook"
    return [by_name.samples_by_name(batch if set(batch) == set(names) else
                                    self._signature_inputs(batch, signature, tensor_names),
                                    names, dtypes, argument=argument, report=report)
            for batch in raw]

  def _batches_from_input_fn(self):
    result = self._calibration_input_fn()
    if isinstance(result, tf.data.Dataset):
      result = result.as_numpy_iterator()
    batches = []
    for batch in result:
      if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], dict):
        batch = batch[0]  # (features, labels)
      if not isinstance(batch, dict):
        raise CalibrationUnusable(f"calibration_input_fn yielded a {type(batch).__name__}; expected a dict of "
                                   "arrays or a (features, labels) tuple")
      batches.append({k: np.asarray(v) for k, v in batch.items()})
      if self._calibration_batches and len(batches) >= self._calibration_batches:
        break
    return batches

  def _signature_inputs(self, features, signature, tensor_names):
    """Turns a features batch into the exported signature's inputs (tf.Example bytes or raw arrays)."""
    receiver = self._receiver_spec()
    receiver_key_of = {name: key for key, name in receiver.inputs.items()}
    inputs = {}
    for tensor in signature.inputs:
      receiver_key = receiver_key_of.get(tensor_names[tensor.name])
      if receiver_key is None:
        raise CalibrationUnusable(f"signature input {tensor.name!r} is not a tensor of the serving input receiver")
      if receiver.parsing:
        missing = sorted(set(receiver.features) - set(features))
        if missing:
          raise CalibrationUnusable(f"the calibration features lack {missing}, which the serving signature parses")
        inputs[tensor.name] = serialize_examples({k: features[k] for k in receiver.features})
      elif receiver_key in receiver.raw_feature:
        feature = receiver.raw_feature[receiver_key]
        if feature not in features:
          raise CalibrationUnusable(f"the calibration features lack {feature!r}, a serving signature input")
        inputs[tensor.name] = _as_input(np.asarray(features[feature]), tensor)
      else:
        raise CalibrationUnusable(
            f"the serving input receiver transforms its input {receiver_key!r} before the model sees it, so "
            "evaluation features cannot be fed to the signature; pass calibration_input_fn with signature inputs")
    return inputs


def _labels(per_batch):
  return list(per_batch) if per_batch and all(label is not None for label in per_batch) else None


def _as_input(array, tensor):
  """Reshapes evaluation features to a raw signature input (e.g. (n,) -> (n, 1)); `by_name` casts them."""
  if tensor.shape is not None and all(d is not None for d in tensor.shape[1:]):
    per_sample = int(np.prod(tensor.shape[1:], dtype=np.int64))
    if array.ndim and array[0].size == per_sample:
      array = array.reshape((len(array),) + tuple(tensor.shape[1:]))
  return array

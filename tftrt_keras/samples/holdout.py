"""Two disjoint samples from one capture: what calibrates and what verification judges on, and what to say
when either is too small."""

from tftrt_keras.samples import calibration_data


# Below these, say so: NVIDIA's ModelOpt recommends at least 500 calibration samples, Ultralytics warns under
# 300; fewer than 100 verification samples cannot bound an agreement near 0.97 (see `verification`).
MIN_CALIBRATION_SAMPLES = 300


MIN_VERIFICATION_SAMPLES = 100


def split_holdout(batches, verification_samples, seed=0):
  """Splits captured batches into (calibration, verification, note): the two never share a sample.

  A quarter of the samples (at most `verification_samples`) is held out at random over the whole pass;
  calibration keeps the captured batch size (the engines' profile depends on it). `note` says how.
  """
  if not batches:
    return [], [], None
  samples = concat_batches(batches)
  total = calibration_data.num_samples(samples)
  verify_index, calibrate_index = holdout_rows(total, verification_samples, seed)
  held = len(verify_index)
  batch_size = max(calibration_data.num_samples(b) for b in batches)
  calibration = calibration_data.batches({k: v[calibrate_index] for k, v in samples.items()}, batch_size)
  verification = [{k: v[verify_index] for k, v in samples.items()}] if held else []
  note = (f"of {total} captured samples, {total - held} calibrate and {held} verify (held out at random over "
          "the whole pass)")
  return calibration, verification, note


def holdout_rows(total, verification_samples, seed=0):
  """(verification rows, calibration rows), each sorted, of `split_holdout` over `total` samples."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  held = min(verification_samples, max(1, total // 4)) if total >= 2 else 0
  order = np.random.default_rng(seed).permutation(total)
  return np.sort(order[:held]), np.sort(order[held:])


def concat_batches(batches):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


MORE_SAMPLES = "raise calibration_batches or pass more calibration_data"  # the Keras callback's arguments


def sample_warnings(calibration_samples, verification_samples, wants_int8, more_samples=MORE_SAMPLES):
  """What a user should hear about too few samples (empty when there is nothing to say); `more_samples` says
  how to get more, in the words of the caller's own arguments or flags."""
  warnings = []
  if wants_int8 and 0 < calibration_samples < MIN_CALIBRATION_SAMPLES:
    warnings.append(f"INT8 calibrates on {calibration_samples} samples; at least {MIN_CALIBRATION_SAMPLES} are "
                    f"recommended (NVIDIA ModelOpt: 500): {more_samples}")
  if 0 < verification_samples < MIN_VERIFICATION_SAMPLES:
    warnings.append(f"verification judges on {verification_samples} held-out samples; below "
                    f"{MIN_VERIFICATION_SAMPLES} an agreement verdict can hardly pass its confidence bound")
  return warnings

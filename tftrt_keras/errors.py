"""Exceptions a user may want to catch."""


class TensorRTUnavailableError(RuntimeError):
  """`require_tensorrt=True` was asked for and TF-TRT cannot run here; the message says why and how to fix it."""


def require_tensorrt_or_raise(options=None):
  """Raises `TensorRTUnavailableError` unless TF-TRT can convert in the export worker; returns its status.

  The question is the worker's, not this process's: it is asked in a child process started as the worker is
  (`preflight.check_tensorrt_as_worker`): the worker's device (`options.conversion_device`) and its library
  path (an installed TensorRT that only the worker's LD_LIBRARY_PATH makes findable is accepted).

  Args:
    options: the export's `ConversionOptions` (for `conversion_device`), or None for the worker's defaults.

  Raises:
    TensorRTUnavailableError: the worker could not convert with TF-TRT; the message holds the preflight's
      reason and fixes.
  """
  from tftrt_keras.preflight import check_tensorrt_as_worker  # pylint: disable=g-import-not-at-top
  device = getattr(options, "conversion_device", None)
  try:
    status = check_tensorrt_as_worker(device)
  except RuntimeError as err:
    raise TensorRTUnavailableError(f"require_tensorrt=True, but the TensorRT check could not run: {err}") from err
  if not status.usable:
    raise TensorRTUnavailableError(
        f"require_tensorrt=True, but TF-TRT cannot run in the export worker: {status.reason}. "
        f"Fix: {'; '.join(status.fixes)}")
  return status

"""Exceptions a user may want to catch."""


class TensorRTUnavailableError(RuntimeError):
  """`require_tensorrt=True` was asked for and TF-TRT cannot run here; the message says why and how to fix it."""


def require_tensorrt_or_raise():
  """Runs the preflight and raises `TensorRTUnavailableError` unless TF-TRT can convert on this machine."""
  from tftrt_keras.preflight import check_tensorrt  # pylint: disable=g-import-not-at-top
  status = check_tensorrt()
  if not status.usable:
    raise TensorRTUnavailableError(
        f"require_tensorrt=True, but TF-TRT cannot run here: {status.reason}. Fix: {'; '.join(status.fixes)}")
  return status

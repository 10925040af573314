"""The exceptions a user may catch, and the one message shape for every bad argument (what is wrong, what
was received, what is expected)."""


def invalid_argument(name, received, expected, *, hint=None):
  """Returns the ValueError every public entry point raises for bad input: "Received ... Expected ...".

  Args:
    name: the argument's (or flag's) name as the user typed it.
    received: the value the user gave.
    expected: a phrase describing what would have been accepted.
    hint: optional extra sentence (how to fix it).
  """
  message = (f"Invalid value for argument `{name}`. Received: {name}={received!r}. "
             f"Expected {expected}.")
  if hint:
    message += f" {hint}"
  return ValueError(message)


class TensorRTUnavailableError(RuntimeError):
  """`require_tensorrt=True` was asked for and no requested TensorRT format (TF-TRT, TensorRT, TensorRT-RTX) can
  build and run engines here; the message says why for each."""

"""What TensorRT says, kept per piece of work (one build, one loaded engine), for reasons and `model.json`.

TensorRT keeps the first logger a process registers while any builder or runtime lives and ignores later ones,
so each module (`tensorrt`, `tensorrt_rtx`) gets one process-wide logger that hands every message to each
`TensorRTLog` open at that moment. Nothing here imports TensorRT: the module is passed in.
"""

import contextlib
import threading

from absl import logging

# A failed build's reason keeps TensorRT's last error lines, not its whole log.
ERROR_LINES_KEPT = 12

_LOGGERS = {}  # module name -> the one ILogger given to that module in this process
_LOCK = threading.Lock()


class TensorRTLog:
  """TensorRT's warnings and errors while this record is open, in order.

  Attributes:
    errors, warnings: ERROR/INTERNAL_ERROR and WARNING messages.
    lines: both, in order (`mark`/`since` read the lines of one call).
  """

  def __init__(self, edition_name="TensorRT"):
    self.edition_name = edition_name
    self.errors, self.warnings, self.lines = [], [], []

  def mark(self):
    """A position in `lines`, for `since`."""
    return len(self.lines)

  def since(self, mark):
    """The warning and error lines said after `mark`."""
    return list(self.lines[mark:])

  def error_text(self):
    lines = self.errors[-ERROR_LINES_KEPT:]
    return " | ".join(lines) if lines else f"{self.edition_name} logged no error"


def _forwarding_logger(trt):
  """An `ILogger` of module `trt` that hands warnings and errors to every open `TensorRTLog` and to absl."""

  class ForwardingLogger(trt.ILogger):

    def __init__(self):
      trt.ILogger.__init__(self)
      self.records = []

    def log(self, severity, msg):
      text = str(msg).strip()
      if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
        kind = "errors"
        logging.error("%s: %s", trt.__name__, text)
      elif severity == trt.ILogger.Severity.WARNING:
        kind = "warnings"
        logging.warning("%s: %s", trt.__name__, text)
      else:
        return
      with _LOCK:
        for record in self.records:
          getattr(record, kind).append(text)
          record.lines.append(text)

  return ForwardingLogger()


def process_logger(trt):
  """The one logger this process gives module `trt` (created on first use)."""
  with _LOCK:
    logger = _LOGGERS.get(trt.__name__)
    if logger is None:
      logger = _LOGGERS[trt.__name__] = _forwarding_logger(trt)
    return logger


def open_log(trt, edition_name):
  """A `TensorRTLog` that receives what module `trt` says from now until `close_log`."""
  record = TensorRTLog(edition_name)
  logger = process_logger(trt)
  with _LOCK:
    logger.records.append(record)
  return record


def close_log(trt, record):
  logger = process_logger(trt)
  with _LOCK:
    if record in logger.records:
      logger.records.remove(record)


@contextlib.contextmanager
def recording(trt, edition_name):
  """`with recording(trt, "TensorRT-RTX") as log:` keeps what TensorRT says inside the block."""
  record = open_log(trt, edition_name)
  try:
    yield record
  finally:
    close_log(trt, record)

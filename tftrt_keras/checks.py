"""How an option is declared (`option`: default, check, one-line doc, flag, entry points), and the value checks
option tables share: each takes (name, value) and returns the value to store, or raises the one
`invalid_argument` error naming `name`."""

import dataclasses
import numbers

from tftrt_keras.errors import invalid_argument


# The entry points an option can reach: `TrtExport`, `TrtExporter`, `export_saved_model`, the training flags
# (`define_export_flags()`) and `tftrt-export`'s flags (`define_export_flags(training=False)`).
KERAS, ESTIMATOR, OFFLINE, FLAGS, CLI = "keras", "estimator", "offline", "flags", "cli"
ENTRY_POINTS = (KERAS, ESTIMATOR, OFFLINE, FLAGS, CLI)
TRAINING = (KERAS, ESTIMATOR, FLAGS)


def option(default=None, doc="", *, check, kind, where=ENTRY_POINTS, flag=None, doc_offline=None,
           default_factory=None):
  """A dataclass field that is also a row of the option table.

  Args:
    default: the default value (written here only); `default_factory` for a mutable one.
    doc: one line for the docs and the flag's help.
    check: callable(name, value) -> the value to store; raises `invalid_argument`.
    kind: how a flag spells the value (see `tftrt_keras.flags.FLAG_KINDS`).
    where: the entry points that take it (`ENTRY_POINTS`).
    flag: the flag's name (default `export_<name>`); doc_offline: `tftrt-export`'s help where it differs.
  """
  metadata = {"doc": doc, "check": check, "kind": kind, "where": tuple(where), "flag": flag,
              "doc_offline": doc_offline or doc}
  if default_factory is not None:
    return dataclasses.field(default_factory=default_factory, metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def _is_int(value):
  return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def _is_number(value):
  return not isinstance(value, bool) and isinstance(value, numbers.Real)


def positive_int(allow_none=False):
  def check(name, value):
    if value is None and allow_none:
      return None
    if not _is_int(value) or value <= 0:
      raise invalid_argument(name, value, "a positive integer" + (" or None" if allow_none else ""))
    return int(value)
  return check


def non_negative_int(name, value):
  if not _is_int(value) or value < 0:
    raise invalid_argument(name, value, "zero or a positive integer")
  return int(value)


def positive_seconds(allow_none=False):
  def check(name, value):
    if value is None and allow_none:
      return None
    if not _is_number(value) or not value > 0:
      raise invalid_argument(name, value, "a positive number (seconds)" + (" or None" if allow_none else ""))
    return value
  return check


def fraction(expected, upper=None):
  """A number >= 0 (and <= `upper` when given); `expected` words it for the error."""
  def check(name, value):
    if not _is_number(value) or not value >= 0 or (upper is not None and not value <= upper):
      raise invalid_argument(name, value, expected)
    return value
  return check


def boolean(name, value):
  if not isinstance(value, bool):
    raise invalid_argument(name, value, "True or False")
  return value


def one_of(choices):
  def check(name, value):
    if value not in choices:
      raise invalid_argument(name, value, f"one of {tuple(choices)}")
    return value
  return check


def optional_text(name, value):
  if value is not None and (not isinstance(value, str) or not value.strip()):
    raise invalid_argument(name, value, "a non-empty string or None")
  return value

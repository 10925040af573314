"""absl flag definitions for training scripts and `tftrt-export`: `define_export_flags()` defines them.

Nothing is defined at import; every flag starts with `export_`, so a script's own `--precisions` stays its own.

Example:
  tftrt_flags.define_export_flags()
  flags.adopt_module_key_flags(tftrt_flags)  # --help then lists the export flags
  def main(_):
    model.fit(..., callbacks=[tftrt_keras.TrtExport.from_flags(flags.FLAGS)])
"""

import json

from absl import flags

from tftrt_keras import checks
from tftrt_keras.options import (ALL_THREADS, AUTO_WORKER, DEFAULT_CALIBRATION_BATCHES, DEFAULT_EXPORTS_TO_KEEP,
                                 LOWEST_PRIORITY, ConversionOptions, option_table)
from tftrt_keras.formats import AUTO, FORMATS, normalize_formats
from tftrt_keras.precisions import PRECISIONS, normalize_precisions

# The training run's own settings (not `ConversionOptions`): flag -> `TrtExport` / `TrtExporter` argument.
TRAINING_SETTINGS = {"export_dir": "export_dir", "export_exports_to_keep": "exports_to_keep",
                     "export_calibration_batches": "calibration_batches", "export_save_best_only": "save_best_only",
                     "export_monitor": "monitor", "export_blocking": "blocking",
                     "export_signature_key": "signature_key"}


def option_flags(training=True):
  """{flag name: option row} of the option table's flags for a training script, or for `tftrt-export`."""
  return {row.flag: row for row in option_table(checks.FLAGS if training else checks.CLI)}


class _NameList(list):
  """A list flag value that prints as the user typed it (`FP16,INT8`), not as a Python list repr.

  absl prints a flag's value in its validation messages (`flags export_precisions=...`).
  """

  def __str__(self):
    return ",".join(self)


class _CheckedParser(flags.ArgumentParser):
  """A parser whose `convert` raises ValueError with a plain message; absl prefixes it with the flag and the
  value as typed: `flag --export_precisions=FP8: expected a subset of FP32,FP16,INT8 (unknown: FP8)`."""

  def __init__(self, convert, type_name, syntactic_help=""):
    super().__init__()
    self._convert = convert
    self._type_name = type_name
    self.syntactic_help = syntactic_help

  def parse(self, argument):
    return self._convert(argument)

  def flag_type(self):
    return self._type_name


def _precisions(argument):
  items = argument.split(",") if isinstance(argument, str) else list(argument)
  unknown = [p.strip() for p in items if p.strip() and p.strip().upper() not in PRECISIONS]
  if unknown:
    raise ValueError(f"expected a subset of {','.join(PRECISIONS)} (unknown: {','.join(unknown)})")
  return _NameList(normalize_precisions(items))


def _formats(argument):
  if isinstance(argument, str) and argument.strip().lower() == AUTO:
    return AUTO
  items = argument.split(",") if isinstance(argument, str) else list(argument)
  unknown = [f.strip() for f in items if f.strip() and f.strip().lower() not in FORMATS]
  if unknown:
    raise ValueError(f"expected {AUTO} or a subset of {','.join(FORMATS)} (unknown: {','.join(unknown)})")
  return _NameList(normalize_formats(items))


def _format_options(argument):
  if argument is None or isinstance(argument, dict):
    return argument or {}
  try:
    value = json.loads(argument) if argument.strip() else {}
  except json.JSONDecodeError as err:
    raise ValueError(f"expected a JSON object such as '{{\"onnx\": {{\"opset\": 17}}}}' ({err})") from None
  if not isinstance(value, dict):
    raise ValueError(f"expected a JSON object {{format name: {{option: value}}}} with formats among "
                     f"{','.join(FORMATS)}")
  return value


def _conversion_device(argument):
  if argument is None or not str(argument).strip():
    return None
  device = str(argument).strip().lower()
  if not (device == "cpu" or (device.startswith("gpu:") and device[4:].isdigit())):
    raise ValueError("expected cpu or gpu:<index> (e.g. gpu:1), or empty for the first GPU")
  return device


def _seconds(argument):
  value = float(argument) if isinstance(argument, str) else argument
  if value is None:
    return None
  if not value >= 0:
    raise ValueError("expected a number of seconds, or 0 to wait without limit")
  return value or None  # 0: no limit


def _worker_threads(argument):
  value = str(argument).strip().lower()
  if value in (AUTO_WORKER, ALL_THREADS):
    return value
  if not value.isdigit() or int(value) <= 0:
    raise ValueError(f"expected a positive number of threads, {ALL_THREADS} or {AUTO_WORKER}")
  return int(value)


def _worker_nice(argument):
  value = str(argument).strip().lower()
  if value == AUTO_WORKER:
    return value
  if not value.isdigit() or int(value) > LOWEST_PRIORITY:
    raise ValueError(f"expected a niceness from 0 to {LOWEST_PRIORITY}, or {AUTO_WORKER}")
  return int(value)


def _non_empty(argument):
  if argument is None or not str(argument).strip():
    return None
  return str(argument).strip()


def _integer(argument):
  try:
    return int(argument)
  except (TypeError, ValueError):
    raise ValueError("expected an integer") from None


def _number(argument):
  try:
    return float(argument)
  except (TypeError, ValueError):
    raise ValueError("expected a number") from None


# Option `kind` -> (parse the flag's text, absl type name, syntax help). A new option kind adds a line here.
FLAG_KINDS = {
    "precisions": (_precisions, "list", f"a subset of {','.join(PRECISIONS)}"),
    "formats": (_formats, "string", f"{AUTO} or a subset of {','.join(FORMATS)}"),
    "json": (_format_options, "string", "a JSON object"),
    "int": (_integer, "int", "an integer"),
    "float": (_number, "float", "a number"),
    "seconds": (_seconds, "float", "seconds, 0 for no limit"),
    "text": (_non_empty, "string", ""),
    "device": (_conversion_device, "string", "cpu or gpu:<index>"),
    "threads": (_worker_threads, "string", f"a number, {ALL_THREADS} or {AUTO_WORKER}"),
    "nice": (_worker_nice, "string", f"0-{LOWEST_PRIORITY} or {AUTO_WORKER}"),
}


def _then_check(parse, row):
  """The flag's parser: its text parsed by kind, then the option table's own check of the value."""
  def convert(argument):
    value = parse(argument)
    row.check(row.name, value)
    return value
  return convert


def _flag_default(row):
  if row.kind == "precisions":
    return ",".join(row.default)
  if row.kind == "seconds" and row.default is None:
    return 0
  return None if row.kind == "json" else row.default


def _serializer(kind):
  if kind == "precisions":
    return flags.CsvListSerializer(",")
  return _JsonSerializer() if kind == "json" else None


def _define(parser, name, default, help_text, fv, serializer=None):
  flags.DEFINE(parser, name, default, help_text, flag_values=fv,
               serializer=serializer or flags.ArgumentSerializer())


def define_export_flags(flag_values=flags.FLAGS, *, export_dir=True, training=True):
  """Defines the export flags on `flag_values`.

  Args:
    flag_values: the `FlagValues` to define on (absl's global `FLAGS` by default).
    export_dir: define `--export_dir` (the offline exporter names its own `--output_dir` instead).
    training: also define the flags only a training run uses and word the help for training; False words it
      for an existing SavedModel (`tftrt-export`).

  Returns:
    {flag name: FlagHolder} of the flags defined.
  """
  fv = flag_values
  before = set(fv)
  if export_dir:
    flags.DEFINE_string("export_dir", None, "Directory for the normal export, its deployment variants and "
                        "manifests (one numbered version per export).", flag_values=fv)
  for name, row in option_flags(training).items():
    help_text = row.doc if training else row.doc_offline
    if row.kind == "bool":  # absl's own boolean flag: --name, --noname
      flags.DEFINE_boolean(name, row.default, help_text, flag_values=fv)
      continue
    parse, type_name, syntax = FLAG_KINDS[row.kind]
    _define(_CheckedParser(_then_check(parse, row), type_name, syntax), name, _flag_default(row), help_text, fv,
            _serializer(row.kind))
  if training:
    flags.DEFINE_integer("export_exports_to_keep", DEFAULT_EXPORTS_TO_KEEP, "Keep only the newest N exports this "
                         "library wrote under --export_dir.", lower_bound=1, flag_values=fv)
  else:
    flags.DEFINE_integer("export_exports_to_keep", None, "Keep only the newest N versions this tool wrote into "
                         "--output_dir (default: keep all).", lower_bound=1, flag_values=fv)
  if training:
    flags.DEFINE_integer("export_calibration_batches", DEFAULT_CALIBRATION_BATCHES, "Validation batches captured "
                         "(spread over the validation pass) for INT8 calibration and verification.", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_boolean("export_save_best_only", False, "Export only when --export_monitor improves.",
                         flag_values=fv)
    flags.DEFINE_string("export_monitor", "val_loss", "Metric that decides --export_save_best_only.",
                        flag_values=fv)
    flags.DEFINE_boolean("export_blocking", False, "Wait for each conversion instead of converting in the "
                         "background while training goes on.", flag_values=fv)
    flags.DEFINE_string("export_signature_key", None, "Signature of the exported model to freeze and convert "
                        "(default: serving_default when present, else predict, else the only one).",
                        flag_values=fv)
    flags.register_multi_flags_validator(
        ["export_precisions", "export_calibration_batches"],
        lambda f: not ("INT8" in [str(p).strip().upper() for p in f["export_precisions"]]
                       and f["export_calibration_batches"] == 0),
        message="--export_precisions includes INT8, which needs calibration data, but "
                "--export_calibration_batches=0 captures none; set --export_calibration_batches to 1 or more, "
                "or drop INT8", flag_values=fv)
  return {name: flags.FlagHolder(fv, fv[name]) for name in sorted(set(fv) - before)}


class _JsonSerializer(flags.ArgumentSerializer):

  def serialize(self, value):
    return "" if value is None else json.dumps(value, sort_keys=True)


def conversion_options_from_flags(flag_values=flags.FLAGS, **overrides):
  """The `ConversionOptions` the defined export flags describe; `overrides` (option names) win.

  Raises:
    ValueError: a value `ConversionOptions` refuses; the message names the flag.
  """
  fv = flag_values
  rows = {row.flag: row for row in option_table() if row.flag in fv}
  options = {row.name: fv[flag].value for flag, row in rows.items()}
  for row in rows.values():
    value = options[row.name]
    if row.kind == "precisions" or (row.kind == "formats" and value != AUTO and value is not None):
      options[row.name] = tuple(value)
    elif row.kind == "json":
      options[row.name] = value or {}
    elif row.kind == "seconds" and value == 0:
      options[row.name] = None  # 0: no limit
  options.update(overrides)
  try:
    return ConversionOptions(**options)
  except ValueError as err:
    named = [f"--{flag}" for flag, row in rows.items() if row.name not in overrides and f"`{row.name}`" in str(err)]
    if not named:
      raise
    raise ValueError(f"{', '.join(named)}: {err}") from err


def training_settings_from_flags(flag_values=flags.FLAGS):
  """The flags of a training run that are not `ConversionOptions`: {`TrtExport` argument name: value}.

  Flags not defined on `flag_values` are left out.
  """
  return {argument: flag_values[flag].value for flag, argument in TRAINING_SETTINGS.items() if flag in flag_values}

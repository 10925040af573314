r"""tftrt-export: build the deployment variants of an existing SavedModel, each verified, with a manifest.

  tftrt-export --saved_model_dir=/models/resnet --output_dir=/serving/resnet \
      --export_precisions=FP16,INT8 --calibration_data=calibration.npz

The output directory gets the layout the training callbacks write: the SavedModel copied as a new numbered
version, its frozen graph, the calibration samples, the variants of each format beside it (TF-TRT
SavedModels, ONNX FP32/FP16/INT8, TensorRT engines; a format that cannot run here is recorded as skipped
with the reason) and `manifests/<version>/manifest.json` with `report.md`.

Flags of this tool:
  --saved_model_dir     the SavedModel to convert (required).
  --output_dir          export root to write the new version into (required; created when missing).
  --signature_key       signature to freeze and convert (default serving_default).
  --calibration_data    .npz with one array per signature input, samples along axis 0; required for INT8.
                        Some samples are held out for verification; the output says how many.
  --calibration_batch_size  batch size for calibration and engine building (default --export_max_batch_size
                        or 8).
  --metrics             Keras metrics (e.g. accuracy,mae) computed on every variant from `label:<output>` arrays
                        in --calibration_data (row for row with the inputs), beside the normal export's.
  --json                print the manifest as JSON instead of the tables.
Export flags (shared with the training scripts, see `tftrt_keras.flags`): `--export_<option>` for every option
of `tftrt_keras.ConversionOptions` but conversion_policy (e.g. --export_precisions, --export_formats,
--export_format_options as JSON, --export_max_batch_size, --export_minimum_segment_size,
--export_verify_tolerance_fp16, --export_triton_repository), and --export_exports_to_keep. The worker defaults
to every core at this command's own priority (--export_worker_nice=19 --export_worker_threads=2 to convert
politely beside other work).

Prints the artifact table, how the samples were split, which artifacts are unverified, the verification table
and the manifest's path.
Exit codes: 0 when the normal export and every attempted artifact are usable: `ok`, or `unverified` (built and
build-checked, but no comparison vouches for it: the output lists them and the table says why), variants skipped
because their format cannot run here included; 1 when an artifact failed or was rejected by verification, or
publishing to --export_triton_repository failed (the table's `serving:triton` row says why); 2 on
bad arguments (nothing is written then), including --export_require_tensorrt when no requested TensorRT format can run here.
"""

import json
import sys

from absl import app
from absl import flags

from tftrt_keras import flags as tftrt_flags
from tftrt_keras import quiet_console

FLAGS = flags.FLAGS
_HELP_ARGS = {"--help", "-help", "-h", "--helpshort", "-?"}


def define_flags(flag_values=FLAGS):
  flags.DEFINE_string("saved_model_dir", None, "The SavedModel to convert.", flag_values=flag_values)
  flags.DEFINE_string("output_dir", None, "Export root to write the new version into.", flag_values=flag_values)
  flags.DEFINE_string("signature_key", "serving_default", "Signature to freeze and convert.", flag_values=flag_values)
  flags.DEFINE_string("calibration_data", None, ".npz with one array per signature input (samples along axis 0); "
                      "required for INT8. Part of the samples is held out for verification.",
                      flag_values=flag_values)
  flags.DEFINE_integer("calibration_batch_size", None, "Batch size for calibration and engine building "
                       "(default: --export_max_batch_size or 8).", lower_bound=1, flag_values=flag_values)
  flags.DEFINE_list("metrics", [], "Keras metrics computed on every variant from the label:<output> arrays of "
                    "--calibration_data (e.g. accuracy,mae).", flag_values=flag_values)
  flags.DEFINE_boolean("json", False, "Print the manifest as JSON instead of the tables.", flag_values=flag_values)
  tftrt_flags.define_export_flags(flag_values, export_dir=False, training=False)


def render_result(manifest, manifest_path, output_dir, said=()):
  """The text `tftrt-export` prints for one finished export: artifacts, sample notes, verification, manifest.
  `said`: reasons printed before the export (this machine's skips), shown as "said above"."""
  from tftrt_keras.verify.report import verification_table  # pylint: disable=g-import-not-at-top
  from tftrt_keras.verify.summary import export_notes, summary_table  # pylint: disable=g-import-not-at-top
  parts = [summary_table([manifest], root=output_dir, said=said)]
  notes = export_notes(manifest)
  if notes:
    parts.append("\n".join(notes))
  table = verification_table(manifest, notes=False)  # the artifact table gives each reason already
  if table:
    parts.append(table)
  parts.append(f"Manifest: {manifest_path}")
  return "\n\n".join(parts)


def run_from_flags(flag_values=FLAGS, out=sys.stdout):
  """Runs one offline export from parsed flags; returns the process exit code."""
  # Imported here so that `--help` answers without loading TensorFlow.
  from tftrt_keras.errors import TensorRTUnavailableError  # pylint: disable=g-import-not-at-top
  from tftrt_keras.artifacts.layout import ExportLayout  # pylint: disable=g-import-not-at-top
  from tftrt_keras.artifacts.manifest import FAILED, REJECTED, serving_failed  # pylint: disable=g-import-not-at-top
  from tftrt_keras.offline.export import export_saved_model  # pylint: disable=g-import-not-at-top
  from tftrt_keras.preflight import variants_skipped_here  # pylint: disable=g-import-not-at-top
  from tftrt_keras.verify.summary import known_skips_text  # pylint: disable=g-import-not-at-top
  try:
    options = tftrt_flags.conversion_options_from_flags(flag_values)
    # As in training: what this machine cannot build is said once, first, in brief (the manifest has it in full).
    skips = {} if flag_values.json else variants_skipped_here(options)
    if skips:
      print(known_skips_text(skips), file=out, flush=True)
    manifest = export_saved_model(
        flag_values.saved_model_dir, flag_values.output_dir, signature_key=flag_values.signature_key,
        calibration_data=flag_values.calibration_data, calibration_batch_size=flag_values.calibration_batch_size,
        options=options, exports_to_keep=flag_values.export_exports_to_keep, metrics=flag_values.metrics)
  except (ValueError, TensorRTUnavailableError) as err:
    print(f"tftrt-export: {err}", file=sys.stderr)
    return 2
  manifest_path = ExportLayout(flag_values.output_dir).manifest_path(manifest["version"])
  if flag_values.json:
    print(json.dumps(manifest, indent=2), file=out)
  else:
    print(render_result(manifest, manifest_path, flag_values.output_dir, said=set(skips.values())), file=out)
  failed = any(e["status"] in (FAILED, REJECTED) for e in manifest["artifacts"].values())
  return 1 if failed or serving_failed(manifest) else 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_console.quiet_absl()  # app.run has just applied --verbosity (or its default)
  quiet_console.import_tensorflow()  # its start-up messages stay off the console
  return run_from_flags()


def _parse_flags(argv):
  """absl's parser, but a bad or missing flag exits with 2 (bad arguments), as every other argument error does;
  absl's own parser exits with 1, which this tool uses for a failed artifact."""
  try:
    return FLAGS(argv)
  except flags.Error as err:
    print(f"tftrt-export: {err}\nPass --help to see the flags.", file=sys.stderr)
    sys.exit(2)


def run():
  """Console-script entry point (`tftrt-export`)."""
  quiet_console.quiet_tensorflow()  # before anything imports TensorFlow
  define_flags()
  if _HELP_ARGS & set(sys.argv[1:]):
    # absl's --help lists the flags of the __main__ module only; a console script's are defined here and in
    # tftrt_keras.flags, so it would list none of them.
    print(__doc__)
    print(FLAGS.module_help(__name__))
    print(FLAGS.module_help(tftrt_flags.__name__))
    return 0
  flags.mark_flags_as_required(["saved_model_dir", "output_dir"])
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()

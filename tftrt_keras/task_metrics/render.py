"""The model's own metrics as users read them: report.md lines, summary lines, TensorBoard scalars. Each reads
the manifest's `task_metrics` entry only."""


def _number(value):
  return "-" if value is None else f"{value:.4g}"


def _interval(bounds):
  return "-" if not bounds else f"[{bounds[0]:+.4g}, {bounds[1]:+.4g}]"


def _rows(manifest):
  entry = manifest.get("task_metrics") or {}
  for name, figures in sorted((entry.get("variants") or {}).items()):
    for metric, f in figures.items():
      if isinstance(f, dict) and "value" in f:
        yield name, metric, f


def markdown_lines(manifest):
  """report.md's section on the model's own metrics ([] when the export recorded none)."""
  entry = manifest.get("task_metrics")
  if not entry:
    return []
  lines = ["## The model's own metrics", ""]
  if entry.get("skipped") or entry.get("error"):
    return lines + [f"Not computed: {entry.get('skipped') or entry.get('error')}.", ""]
  lines += [f"On {entry.get('samples')} labelled verification samples; {entry.get('method')}.", ""]
  lines += ["| artifact | metric | value | normal export | difference | 95% interval | gate |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
  lines += [f"| {name} | {metric} | {_number(f['value'])} | {_number(f['normal'])} | {f['difference']:+.4g} | "
            f"{_interval(f.get('interval'))} | {f.get('verdict', '-')} |" for name, metric, f in _rows(manifest)]
  left_out = entry.get("left_out") or {}
  if left_out:
    lines += [""] + [f"- left out: {metric}: {why}" for metric, why in sorted(left_out.items())]
  return lines + [""]


def summary_lines(manifest):
  """One line per variant and metric for the end-of-training summary ([] when none)."""
  entry = manifest.get("task_metrics") or {}
  if entry.get("skipped"):
    return [f"Model's own metrics: {entry['skipped']}."]
  return [f"{name} {metric}: {_number(f['value'])} (normal export {_number(f['normal'])}, difference "
          f"{f['difference']:+.4g}, 95% interval {_interval(f.get('interval'))})" for name, metric, f in _rows(manifest)]


def tensorboard_scalars(manifest):
  """{tag: value}: `task_metrics/<artifact>/<metric>` per variant, `task_metrics/native/<metric>`."""
  entry = manifest.get("task_metrics") or {}
  scalars = {f"task_metrics/native/{metric}": value for metric, value in (entry.get("normal") or {}).items()}
  scalars.update({f"task_metrics/{name}/{metric}": f["value"] for name, metric, f in _rows(manifest)})
  return scalars

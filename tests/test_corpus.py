"""Users' own training scripts (keras-io examples, tests/corpus/) through TrtExport, as child processes (issue 22).

A few fast scripts per TF line run once each (a session cache), each as `python tests/corpus/<name>.py <dir>`;
the others run in benchmarks/bench_corpus.py. Done when, for each: `fit` finishes, the normal export is `ok`,
every other artifact is `ok` or not usable for a reason of this machine or of the data
(tests/corpus_scripts.py lists them), no variant built on a rejected or failed source is usable, and a model fed
a dict gets its samples under its own input names.
"""

import numpy as np
import pytest

from tests import corpus_scripts

pytestmark = [pytest.mark.tf, pytest.mark.slow]

LINE = corpus_scripts.tf_line()
# About 2 minutes per line on 2 idle cores: the baseline, the dict-fed list-input model (samples by name, int
# data into float Inputs), a lookup table in the model (TextVectorization) and float64 tf.data windows.
SUITE = ("mnist_convnet", "functional_api_multi_io", "text_classification_from_scratch",
         "timeseries_weather_forecasting")
SUITE_HERE = [name for name in SUITE if LINE in corpus_scripts.lines_of(name)]
# What the dict-fed scripts feed, per input name: (trailing shape, the values' range), from the script's data.
DICT_FED_SAMPLES = {
    "functional_api_multi_io": {"title": ((10,), (0, 10000)), "body": ((100,), (0, 10000)), "tags": ((12,), (0, 1))},
}

_runs = {}


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("corpus")


def run_of(name, corpus_dir):
  if name not in _runs:
    _runs[name] = corpus_scripts.run_script(name, str(corpus_dir / name), timeout=300)
  return _runs[name]


def finished(run):
  assert run.returncode == 0, f"{run.name} exited {run.returncode}:\n{run.output[-3000:]}"
  manifests = run.manifests()
  assert manifests, f"{run.name} wrote no manifest under {run.export_dir}:\n{run.output[-3000:]}"
  return manifests


def test_suite_applies_here():
  assert SUITE_HERE, f"no suite script applies to TF {LINE}"
  for name in SUITE + tuple(DICT_FED_SAMPLES):
    assert name in corpus_scripts.scripts(), name


@pytest.mark.parametrize("name", SUITE_HERE)
def test_fit_finishes_and_the_normal_export_is_ok(name, corpus_dir):
  for version, manifest in finished(run_of(name, corpus_dir)).items():
    native = manifest["artifacts"]["native"]
    assert native["status"] == "ok", f"{name} version {version}: native {native['status']}: {native.get('reason')}"


@pytest.mark.parametrize("name", SUITE_HERE)
def test_every_artifact_is_ok_or_unusable_for_a_reason_not_ours(name, corpus_dir):
  problems = [p for m in finished(run_of(name, corpus_dir)).values() for p in corpus_scripts.not_ours_problems(m)]
  assert not problems, f"{name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", SUITE_HERE)
def test_no_variant_on_a_rejected_or_failed_source_is_usable(name, corpus_dir):
  found = [p for m in finished(run_of(name, corpus_dir)).values()
           for p in corpus_scripts.usable_on_unusable_source(m)]
  assert not found, f"{name}:\n" + "\n".join(found)


@pytest.mark.parametrize("name", [n for n in DICT_FED_SAMPLES if n in SUITE_HERE])
@pytest.mark.parametrize("kind", ["calibration", "verification"])
def test_dict_fed_samples_sit_under_their_own_names(name, kind, corpus_dir):
  run = run_of(name, corpus_dir)
  expected = DICT_FED_SAMPLES[name]
  for version in finished(run):
    samples = run.samples(version, kind)
    assert sorted(samples) == sorted(expected), f"version {version} {kind}.npz holds {sorted(samples)}"
    for input_name, (shape, (low, high)) in expected.items():
      array = samples[input_name]
      assert array.shape[1:] == shape, (f"version {version} {kind}.npz `{input_name}` has shape {array.shape}, "
                                        f"the data fed under that name is (n,) + {shape}")
      assert low <= array.min() and array.max() <= high, f"`{input_name}` values outside [{low}, {high}]"
      assert np.array_equal(array, np.round(array)), f"`{input_name}` holds non-integer values"

"""Triton model repositories from exports: config.pbtxt parsed by Triton's own protobuf and checked field by field
against the variant's model.json; what cannot be expressed is left out with the reason; atomic versions and
retention that touches only what we wrote."""

import json
import os

import pytest

from tftrt_keras.serving import triton
from tftrt_keras.pipeline import prepare
from tftrt_keras.pipeline import run as export_run
from tests import triton_helpers

CLASSIFIER = {"inputs": [{"name": "x", "dtype": "float32", "shape": [None, 4]}],
              "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 3]},
                          {"name": "probabilities", "dtype": "float32", "shape": [None, 3]}]}
ENGINE = {"inputs": [{"name": "image", "dtype": "float16", "shape": [None, 3, None, None]},
                     {"name": "mask", "dtype": "int32", "shape": [None, 7]}],
          "outputs": [{"name": "scores", "dtype": "float32", "shape": [None, 10]},
                      {"name": "count", "dtype": "int64", "shape": [None]}],
          "profiles": {"image": {"min": [1, 3, 32, 32], "opt": [8, 3, 224, 224], "max": [16, 3, 512, 512]},
                       "mask": {"min": [1, 7], "opt": [8, 7], "max": [32, 7]}},
          "compute_capability": "8.6"}


@pytest.fixture(scope="module")
def triton_venv():
  reason = triton_helpers.triton_venv_skip_reason()
  if reason:
    pytest.skip(reason)


def _write_and_parse(tmp_path, config):
  path = tmp_path / "config.pbtxt"
  path.write_text(triton.config_text(config, comment="test"))
  return triton_helpers.parse_configs([path])[str(path)]


def _check_tensors(parsed, metadata, key):
  """Each parsed input/output against model.json: name, Triton type, dims without the batch dimension."""
  assert [t["name"] for t in parsed] == [t["name"] for t in metadata[key]]
  for tensor, spec in zip(parsed, metadata[key]):
    assert tensor["data_type"] == triton.TRITON_DTYPES[spec["dtype"]]
    rest = spec["shape"][1:]
    if rest:
      assert [int(d) for d in tensor["dims"]] == [-1 if d is None else d for d in rest]
    else:  # a [batch] tensor: dims [1] reshaped to []
      assert [int(d) for d in tensor["dims"]] == [1]


@pytest.mark.unit
def test_onnx_config_parses_with_tritons_protobuf_and_matches_model_json(tmp_path, triton_venv):
  config = triton.model_config("onnx_fp16", CLASSIFIER, model_name="clf_onnx_fp16", max_batch_size=8,
                               batch_sizes=[4, 4, 3])
  parsed = _write_and_parse(tmp_path, config)
  assert parsed["name"] == "clf_onnx_fp16"
  assert parsed["platform"] == "onnxruntime_onnx"
  assert parsed["max_batch_size"] == 8
  _check_tensors(parsed["input"], CLASSIFIER, "inputs")
  _check_tensors(parsed["output"], CLASSIFIER, "outputs")
  assert parsed["dynamic_batching"]["preferred_batch_size"] == [4]  # the captured batch size
  assert parsed["version_policy"] == {"latest": {"num_versions": 1}}
  assert "cc_model_filenames" not in parsed and "backend" not in parsed


@pytest.mark.unit
def test_tensorrt_config_takes_batch_sizes_and_compute_capability_from_the_engine(tmp_path, triton_venv):
  config = triton.model_config("trt_fp16", ENGINE, model_name="net_trt_fp16", max_batch_size=64)
  parsed = _write_and_parse(tmp_path, config)
  assert parsed["platform"] == "tensorrt_plan"
  assert parsed["max_batch_size"] == 16  # the smallest profile max over inputs, not the export's 64
  assert parsed["dynamic_batching"]["preferred_batch_size"] == [8]  # the profile's opt
  assert parsed["cc_model_filenames"] == {"8.6": "model.plan"}
  _check_tensors(parsed["input"], ENGINE, "inputs")
  _check_tensors(parsed["output"], ENGINE, "outputs")
  assert parsed["_has_reshape"] == {"image": False, "mask": False, "scores": False, "count": True}
  count = parsed["output"][1]
  assert count.get("reshape", {}).get("shape", []) == []


@pytest.mark.unit
def test_every_dtype_and_awkward_names_survive_the_round_trip(tmp_path, triton_venv):
  inputs = [{"name": f'in_{dtype}', "dtype": dtype, "shape": [None, 2]} for dtype in sorted(triton.TRITON_DTYPES)]
  inputs.append({"name": 'odd "name" \\ with:0', "dtype": "float32", "shape": [None, None]})
  metadata = {"inputs": inputs, "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 2]}]}
  config = triton.model_config("onnx_fp32", metadata, model_name="all_onnx_fp32", max_batch_size=2)
  parsed = _write_and_parse(tmp_path, config)
  _check_tensors(parsed["input"], metadata, "inputs")
  assert "preferred_batch_size" not in parsed.get("dynamic_batching", {})  # no captured batches: none preferred
  assert "dynamic_batching" in parsed


@pytest.mark.unit
@pytest.mark.parametrize("variant,change,reason", [
    ("trt_fp32", {"inputs": [{"name": "text", "dtype": "string", "shape": [None]}]}, "cannot take or give"),
    ("onnx_fp32", {"inputs": [{"name": "x", "dtype": "float32", "shape": None}]}, "unknown rank"),
    ("onnx_fp32", {"inputs": [{"name": "x", "dtype": "float32", "shape": [1, 4]}]}, "fixed batch dimension (1)"),
    ("onnx_fp32", {"inputs": [{"name": "x", "dtype": "float32", "shape": []}]}, "scalar"),
    ("onnx_fp32", {"inputs": [{"name": "x", "dtype": "complex64", "shape": [None]}]}, "no type for"),
    ("onnx_fp32", {"outputs": []}, "lists no outputs"),
    ("trt_fp32", {"compute_capability": None}, "compute capability is unknown"),
    ("trt_fp32", {"profiles": {"image": {"min": [2, 3, 8, 8], "opt": [8, 3, 8, 8], "max": [8, 3, 8, 8]},
                               "mask": {"min": [1, 7], "opt": [8, 7], "max": [8, 7]}}}, "starts at batch 2"),
    ("trt_fp32", {"profiles": {}}, "no optimization profile"),
    ("tftrt_fp32", {}, "not a format Triton serves"),
])
def test_what_triton_cannot_express_is_refused_with_the_reason(variant, change, reason):
  metadata = dict(ENGINE, **change)
  with pytest.raises(triton.Unservable, match=reason.replace("(", r"\(").replace(")", r"\)")):
    triton.model_config(variant, metadata, model_name="m", max_batch_size=4)


@pytest.mark.unit
def test_strings_are_served_from_onnx_but_not_from_a_plan(tmp_path, triton_venv):
  metadata = {"inputs": [{"name": "token", "dtype": "string", "shape": [None]}],
              "outputs": [{"name": "id", "dtype": "int64", "shape": [None]}]}
  parsed = _write_and_parse(tmp_path, triton.model_config("onnx_fp32", metadata, model_name="t", max_batch_size=4))
  assert parsed["input"][0]["data_type"] == "TYPE_STRING"
  with pytest.raises(triton.Unservable, match="string"):
    triton.model_config("trt_fp32", dict(metadata, profiles={"token": {"min": [1], "opt": [4], "max": [4]}},
                                         compute_capability="8.9"), model_name="t", max_batch_size=4)


def _variant_dir(tmp_path, name, metadata=CLASSIFIER, payload=b"onnx bytes"):
  directory = tmp_path / "export" / name / "1"
  directory.mkdir(parents=True)
  (directory / "model.onnx").write_bytes(payload)
  (directory / "model.json").write_text(json.dumps(metadata))
  return directory


def _publish(tmp_path, variant_dir, version, name="clf_onnx_fp32", staging=True):
  config = triton.model_config("onnx_fp32", CLASSIFIER, model_name=name, max_batch_size=4)
  staging_dir = None
  if staging:
    staging_dir = tmp_path / f"staging-{version}"
    staging_dir.mkdir()
  return triton.publish_model(str(tmp_path / "repo"), config, str(variant_dir), version,
                              export_root=str(tmp_path / "export"), variant="onnx_fp32",
                              staging_dir=str(staging_dir) if staging_dir else None)


@pytest.mark.unit
def test_versions_appear_whole_and_only_in_our_model_directories(tmp_path):
  variant = _variant_dir(tmp_path, "onnx_fp32")
  first = _publish(tmp_path, variant, 1)
  second = _publish(tmp_path, variant, 2, staging=False)
  model_dir = tmp_path / "repo" / "clf_onnx_fp32"
  assert sorted(os.listdir(model_dir)) == [".tftrt_keras", "1", "2", "config.pbtxt"]  # no temp left behind
  assert (tmp_path / "repo" / "clf_onnx_fp32" / "1" / "model.onnx").read_bytes() == b"onnx bytes"
  assert os.path.samefile(os.path.join(first, "model.onnx"), variant / "model.onnx")  # a hard link, not a copy
  assert os.listdir(tmp_path / "staging-1") == []  # the new model was renamed out of the staging directory
  assert second.endswith(os.path.join("clf_onnx_fp32", "2"))
  with pytest.raises(triton.Unservable, match="already in the repository"):
    _publish(tmp_path, variant, 2, staging=False)
  foreign = tmp_path / "repo" / "someone_elses"
  foreign.mkdir()
  with pytest.raises(triton.Unservable, match="not written by tftrt_keras"):
    _publish(tmp_path, variant, 3, name="someone_elses", staging=False)
  assert os.listdir(foreign) == []


@pytest.mark.unit
def test_a_dead_writers_hidden_version_is_cleaned_and_never_a_version(tmp_path):
  variant = _variant_dir(tmp_path, "onnx_fp32")
  _publish(tmp_path, variant, 1)
  model_dir = tmp_path / "repo" / "clf_onnx_fp32"
  dead = model_dir / ".tmp-2-999999999-0123abcd"  # no such pid
  dead.mkdir()
  _publish(tmp_path, variant, 3, staging=False)
  assert sorted(os.listdir(model_dir)) == [".tftrt_keras", "1", "3", "config.pbtxt"]


@pytest.mark.unit
def test_retention_deletes_only_our_versions_that_the_export_dropped(tmp_path):
  variant = _variant_dir(tmp_path, "onnx_fp32")
  for version in (1, 2, 3):
    _publish(tmp_path, variant, version, staging=False)
  _publish(tmp_path, variant, 1, name="clf_onnx_int8", staging=False)  # marker says onnx_fp32: not this name
  other = tmp_path / "repo" / "clf_custom"
  (other / "1").mkdir(parents=True)
  deleted = triton.retain_triton(str(tmp_path / "repo"), "clf", [2, 3], export_root=str(tmp_path / "export"))
  assert deleted == [str(tmp_path / "repo" / "clf_onnx_fp32" / "1")]
  assert sorted(os.listdir(tmp_path / "repo" / "clf_onnx_fp32")) == [".tftrt_keras", "2", "3", "config.pbtxt"]
  assert os.listdir(tmp_path / "repo" / "clf_onnx_int8")  # a name its marker does not give: not ours to touch
  assert os.listdir(other) == ["1"]
  assert triton.retain_triton(str(tmp_path / "repo"), "clf", [2, 3], export_root=str(tmp_path / "elsewhere")) == []
  assert triton.retain_triton(str(tmp_path / "repo"), "clf", [9]) == [str(tmp_path / "repo" / "clf_onnx_fp32")]


@pytest.mark.unit
def test_model_names_come_from_the_option_or_the_export_root():
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  assert triton.model_name_prefix("/exports/my model/", ConversionOptions()) == "my_model"
  assert triton.model_name_prefix("/exports/x", ConversionOptions(triton_model_name="resnet")) == "resnet"
  assert triton.triton_model_name("resnet", "trt_int8") == "resnet_trt_int8"


# --- publish_export on real exports ---------------------------------------------------------------------------

def _classifier_saved_model(path, batch=None):
  """A real SavedModel: x [batch, 4] -> probabilities [batch, 3] = softmax(x @ w + b), fixed weights."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class Classifier(tf.Module):

    def __init__(self):
      super().__init__()
      rng = np.random.default_rng(0)
      self.w = tf.Variable(rng.normal(size=(4, 3)).astype("float32"), name="w")
      self.b = tf.Variable(rng.normal(size=(3,)).astype("float32"), name="b")

    @tf.function(input_signature=[tf.TensorSpec([batch, 4], tf.float32, name="x")])
    def serve(self, x):
      return {"probabilities": tf.nn.softmax(tf.matmul(x, self.w) + self.b)}

  module = Classifier()
  tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


@pytest.fixture(scope="module")
def published(tmp_path_factory):
  """Two real exports (versions 1 and 2) of a real classifier SavedModel through the export pipeline, in this
  process: `prepare_export`, then `run_export` freezes, builds onnx_fp32/fp16/int8 with the ONNX format,
  verifies them on 300 held-out samples and calls `publish_export`. FP16 is held to a tolerance no FP16 model
  meets (its classifier tolerance: the output is probabilities), so verification really rejects it."""
  from tftrt_keras.pipeline import prepare  # pylint: disable=g-import-not-at-top
  from tftrt_keras.pipeline import run as export_run  # pylint: disable=g-import-not-at-top
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  base = tmp_path_factory.mktemp("triton_publish")
  root, repository = base / "my_classifier", base / "repository"
  options = ConversionOptions(formats=("onnx",), max_batch_size=8, triton_repository=str(repository),
                              verify_tolerance_fp16_classifier=1e-9)
  manifests = {}
  for version in (1, 2):
    request = prepare.prepare_export(str(root), version, {"kind": "test"}, options,
                                      write_native=_classifier_saved_model,
                                      batches=[saved_models.samples(4, seed=s) for s in range(3)],
                                      verification_batches=[saved_models.samples(100, seed=10 + s) for s in range(3)])
    manifests[version] = export_run.run_export(request)
  return {"root": root, "repository": repository, "manifests": manifests, "options": options,
          "records": {v: m["serving"]["triton"] for v, m in manifests.items()}}


@pytest.mark.tf
def test_publish_export_writes_ok_variants_and_records_the_rest(published, triton_venv):
  manifest = published["manifests"][2]
  statuses = {n: manifest["artifacts"][n]["status"] for n in ("onnx_fp32", "onnx_fp16", "onnx_int8")}
  assert statuses == {"onnx_fp32": "ok", "onnx_fp16": "rejected", "onnx_int8": "ok"}, manifest["artifacts"]
  record = published["records"][2]
  repository = published["repository"]
  assert record["repository"] == str(repository)
  assert set(record["models"]) == {"my_classifier_onnx_fp32", "my_classifier_onnx_int8"}
  for variant in ("onnx_fp32", "onnx_int8"):
    model = record["models"][f"my_classifier_{variant}"]
    assert (model["variant"], model["version"], model["platform"], model["max_batch_size"]) == (
        variant, 2, "onnxruntime_onnx", 8)
    assert model["path"] == str(repository / f"my_classifier_{variant}" / "2")
  reason = manifest["artifacts"]["onnx_fp16"]["reason"]
  assert reason and record["left_out"] == {"onnx_fp16": f"the variant is rejected: {reason}"}
  assert sorted(os.listdir(repository)) == ["my_classifier_onnx_fp32", "my_classifier_onnx_int8"]
  on_disk = json.loads((published["root"] / "manifests" / "2" / "manifest.json").read_text())
  assert on_disk["serving"]["triton"] == record
  assert published["records"][1]["models"]["my_classifier_onnx_fp32"]["version"] == 1
  config_paths = [str(repository / name / "config.pbtxt") for name in sorted(record["models"])]
  parsed_configs = triton_helpers.parse_configs(config_paths)
  for name, config_path in zip(sorted(record["models"]), config_paths):
    model_dir = repository / name
    assert sorted(n for n in os.listdir(model_dir) if n.isdigit()) == ["1", "2"]
    variant = record["models"][name]["variant"]
    # The version holds the variant the ONNX format built, not a copy made to look like it.
    assert (model_dir / "2" / "model.onnx").read_bytes() == (
        published["root"] / variant / "2" / "model.onnx").read_bytes()
    with open(model_dir / "2" / "model.json") as f:
      metadata = json.load(f)
    assert (metadata["format"], metadata["artifact"]) == ("onnx", variant)
    parsed = parsed_configs[config_path]
    assert parsed["name"] == name and parsed["platform"] == "onnxruntime_onnx"
    _check_tensors(parsed["input"], metadata, "inputs")
    _check_tensors(parsed["output"], metadata, "outputs")
    assert parsed["max_batch_size"] == 8
    assert parsed["dynamic_batching"]["preferred_batch_size"] == [4]  # calibration batches of 4 were captured
  assert not any(n.startswith(".tmp-") for n in os.listdir(published["root"]))  # the staging directory is gone


@pytest.mark.tf
def test_export_retention_removes_the_triton_versions_too(published):
  from tftrt_keras.artifacts.layout import ExportLayout  # pylint: disable=g-import-not-at-top
  root, repository = published["root"], published["repository"]
  ExportLayout(str(root)).retain(1)
  deleted = triton.retain_for_export(str(root), published["options"])
  assert sorted(deleted) == [str(repository / name / "1") for name in ("my_classifier_onnx_fp32",
                                                                        "my_classifier_onnx_int8")]
  for name in ("my_classifier_onnx_fp32", "my_classifier_onnx_int8"):
    assert sorted(n for n in os.listdir(repository / name) if n.isdigit()) == ["2"]


@pytest.mark.tf
def test_unverified_variants_are_published_with_their_status_and_retained_like_the_others(tmp_path):
  """Two real exports judged on 16 held-out samples: onnx_fp32 is verified by its error (`ok`), the FP16
  classifier cannot show its top-1 agreement on so few (`unverified`). Both are usable: both are published, the
  record says which is which; retention then drops version 1 of both, unverified or not."""
  from tftrt_keras.artifacts.layout import ExportLayout  # pylint: disable=g-import-not-at-top
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  root, repository = tmp_path / "few", tmp_path / "repository"
  options = ConversionOptions(formats=("onnx",), precisions=("FP32", "FP16"), max_batch_size=8,
                              triton_repository=str(repository), verify_timed_runs=2, verify_warmup_runs=0)
  manifests = {}
  for version in (1, 2):
    request = prepare.prepare_export(str(root), version, {"kind": "test"}, options, write_native=_classifier_saved_model,
                                      batches=[saved_models.samples(8, seed=s) for s in range(8)])
    manifests[version] = export_run.run_export(request)
  for version, manifest in manifests.items():
    assert manifest["artifacts"]["onnx_fp32"]["status"] == "ok", manifest["artifacts"]["onnx_fp32"]
    fp16 = manifest["artifacts"]["onnx_fp16"]
    assert fp16["status"] == "unverified" and "too few verification samples to tell" in fp16["reason"], fp16
    record = manifest["serving"]["triton"]
    assert record["left_out"] == {}
    assert {name: (model["variant"], model["status"], model["version"]) for name, model in record["models"].items()} == {
        "few_onnx_fp32": ("onnx_fp32", "ok", version), "few_onnx_fp16": ("onnx_fp16", "unverified", version)}
    assert (repository / "few_onnx_fp16" / str(version) / "model.onnx").read_bytes() == (
        root / "onnx_fp16" / str(version) / "model.onnx").read_bytes()
  ExportLayout(str(root)).retain(1)
  assert sorted(os.listdir(root / "onnx_fp16")) == ["2"]  # retention reads a manifest with unverified entries
  assert sorted(triton.retain_for_export(str(root), options)) == [
      str(repository / name / "1") for name in ("few_onnx_fp16", "few_onnx_fp32")]
  for name in ("few_onnx_fp16", "few_onnx_fp32"):
    assert sorted(n for n in os.listdir(repository / name) if n.isdigit()) == ["2"]


@pytest.mark.tf
def test_a_usable_variant_with_a_fixed_batch_dimension_is_left_out_with_the_reason(tmp_path):
  """A real export of the classifier traced for batches of exactly 4: its ONNX FP32 variant is built (verification
  cannot time it at batch 1: `unverified`, usable), and the repository does not get a model Triton would batch
  wrongly."""
  from tftrt_keras.pipeline import run as pipeline  # pylint: disable=g-import-not-at-top
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  repository = tmp_path / "repository"
  options = ConversionOptions(formats=("onnx",), precisions=("FP32",), max_batch_size=4,
                              triton_repository=str(repository))
  request = prepare.prepare_export(str(tmp_path / "fixed"), 1, {"kind": "test"}, options,
                                    write_native=lambda d: _classifier_saved_model(d, batch=4),
                                    batches=[saved_models.samples(4, seed=s) for s in range(8)])
  manifest = export_run.run_export(request)
  entry = manifest["artifacts"]["onnx_fp32"]
  assert entry["status"] == "unverified" and entry["reason"].startswith("verification could not run: "), entry
  with open(tmp_path / "fixed" / "onnx_fp32" / "1" / "model.json") as f:
    assert json.load(f)["inputs"][0]["shape"] == [4, 4]
  record = manifest["serving"]["triton"]
  assert record["models"] == {}
  assert "fixed batch dimension (4)" in record["left_out"]["onnx_fp32"]
  # The summary's reason is why the usable variant was left out, not that nothing could be served.
  assert (record["status"], record["reason"]) == ("skipped", f"nothing published: onnx_fp32: {record['left_out']['onnx_fp32']}")
  assert os.listdir(repository) == []

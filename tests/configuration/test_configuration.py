"""The one config system: messages that name the key and a close match, includes, overrides, paths, CLIs."""

from __future__ import annotations

import pytest
from pydantic import Field

from configuration import ConfigError, StrictModel, apply_override, load_config, read_mapping, validate
from configuration.cli import print_config, run_cli
from launch.training.config import PretrainConfig, load_pretrain_config
from tests.conftest import ROOT

DEMO = "configs/pretrain/demo.yaml"


class Leaf(StrictModel):
    url: str
    weight: float = Field(1.0, gt=0)


class Tree(StrictModel):
    mode: str = "a"
    leaves: list[Leaf] = []
    maybe: Leaf | None = None


def message(data: dict) -> str:
    with pytest.raises(ConfigError) as err:
        validate(Tree, data, "test.yaml", "tree config")
    return str(err.value)


def test_unknown_key_in_a_list_item_names_the_path_the_allowed_keys_and_a_close_match():
    text = message({"leaves": [{"url": "x"}, {"ulr": "y"}]})
    assert "invalid tree config (test.yaml):" in text
    assert "leaves.1.ulr: unknown key (allowed: url, weight); did you mean 'url'?" in text


def test_unknown_key_under_an_optional_section_lists_its_keys():
    assert "maybe.wieght: unknown key (allowed: url, weight); did you mean 'weight'?" in message(
        {"maybe": {"url": "x", "wieght": 2}})


def test_every_bad_key_is_reported_at_once():
    text = message({"mode": "a", "leaves": [{"url": "x", "weight": -1}], "mod": 1})
    assert "leaves.0.weight: Input should be greater than 0 (got -1)" in text
    assert "mod: unknown key" in text and "did you mean 'mode'?" in text


def test_a_misspelt_value_of_a_choice_gets_a_suggestion():
    with pytest.raises(ConfigError, match=r"train.precision: Input should be 'auto', 'fp32', 'bf16' or 'fp16' "
                                          r"\(got 'fp33'\); did you mean 'fp32'\?"):
        load_pretrain_config(DEMO, ["train.precision=fp33"])


def test_no_suggestion_when_nothing_is_close():
    assert "did you mean" not in message({"zzzzzz": 1})


def test_includes_are_swapped_then_overridden_from_inside():
    cfg = load_pretrain_config(DEMO, ["deepspeed=configs/deepspeed/zero2.json",
                                      "deepspeed.zero_optimization.stage=1", "model.encoder.depth=2"])
    assert cfg.deepspeed["zero_optimization"]["stage"] == 1
    assert "overlap_comm" in cfg.deepspeed["zero_optimization"]  # the rest of zero2.json came along
    assert cfg.model.encoder.depth == 2 and cfg.model.name == "tiny"


def test_shipped_configs_resolve_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_pretrain_config(DEMO)
    assert cfg.model.name == "tiny" and cfg.deepspeed["zero_optimization"]["stage"] == 0


def test_a_file_next_to_the_config_wins_over_the_project_root(tmp_path, monkeypatch):
    (tmp_path / "configs" / "model").mkdir(parents=True)
    (tmp_path / "configs" / "model" / "tiny.yaml").write_text((ROOT / "configs/model/tiny.yaml").read_text()
                                                              + "name: local_tiny\n")
    job = tmp_path / "job.yaml"
    job.write_text((ROOT / DEMO).read_text())
    monkeypatch.chdir(ROOT)  # configs/model/tiny.yaml exists here too: the working directory comes first
    assert load_pretrain_config(job).model.name == "tiny"
    monkeypatch.chdir(tmp_path.parent)
    assert load_pretrain_config(job).model.name == "local_tiny"


def test_a_missing_file_names_every_place_looked_at(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"file 'nope.yaml' not found \(looked at nope.yaml, .*nope.yaml\)"):
        load_config(Tree, "nope.yaml", what="tree config")


@pytest.mark.parametrize("text, expected", [
    ("a: [1, 2", "is not valid YAML"),
    ("- 1\n- 2\n", "top level must be a mapping, got list"),
])
def test_unreadable_documents_are_named(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as err:
        read_mapping(path)
    assert str(path) in str(err.value)


def test_an_empty_document_is_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(Tree, path) == Tree()


def test_numbers_must_be_finite_in_every_section():
    text = message({"leaves": [{"url": "x", "weight": float("inf")}], "maybe": {"url": "y", "weight": float("nan")}})
    assert "leaves.0.weight: Input should be a finite number (got inf)" in text
    assert "maybe.weight: Input should be a finite number (got nan)" in text


def test_a_yaml_error_in_an_override_is_one_line():
    with pytest.raises(ConfigError) as err:
        apply_override({}, "train.max_steps=[1")
    assert "\n" not in str(err.value)
    assert "override train.max_steps: value '[1' is not valid YAML (line 1, column 3: expected ',' or ']'" in str(err.value)


@pytest.mark.parametrize("item, expected", [
    ("train.max_steps", "not KEY=VALUE"),
    ("a..b=1", "not KEY=VALUE"),
    ("leaves.5.url=x", "leaves.5 is not an index of a list of 1"),
    ("mode=[1, 2", "is not valid YAML"),
])
def test_bad_overrides_are_refused(item, expected):
    with pytest.raises(ConfigError, match=expected):
        apply_override({"mode": "a", "leaves": [{"url": "x"}]}, item)


def test_overrides_parse_values_as_yaml_and_create_sections():
    tree = {"leaves": [{"url": "x"}]}
    for item in ("leaves.0.weight=2.5", "maybe.url=y", "mode=null"):
        apply_override(tree, item)
    assert tree == {"leaves": [{"url": "x", "weight": 2.5}], "maybe": {"url": "y"}, "mode": None}


def test_the_cli_wrapper_turns_config_errors_into_one_error_line_and_exit_code_2(capsys):
    def main() -> int:
        raise ConfigError("invalid tree config (x): mode: unknown key")

    assert run_cli(main) == 2
    assert capsys.readouterr().err == "error: invalid tree config (x): mode: unknown key\n"
    assert run_cli(lambda: 0) == 0


def test_other_errors_are_not_swallowed():
    with pytest.raises(ZeroDivisionError):
        run_cli(lambda: 1 // 0)


def test_print_config_shows_the_resolved_tree_without_credentials(capsys):
    cfg = load_pretrain_config(DEMO, ["data.datasets.0.storage_options.key=AKIA123",
                                      "data.datasets.0.storage_options.endpoint_url=http://s3:9000"])
    print_config(cfg)
    out = capsys.readouterr().out
    assert "AKIA123" not in out and "key: '***'" in out and "endpoint_url: http://s3:9000" in out
    assert PretrainConfig.model_validate(__import__("yaml").safe_load(out.replace("'***'", "x"))).model.name == "tiny"


@pytest.mark.parametrize("key, secret", [
    ("aws_secret_access_key", True), ("session_token", True), ("token", True), ("password", True),
    ("db_passwd", True), ("credentials", True), ("api_key", True), ("SECRET", True),
    ("tokenizer", False), ("num_tokens", False), ("sessions_dir", False),
])
def test_redaction_knows_secret_names_from_words_that_contain_them(key, secret):
    from configuration.redact import redact

    assert (redact({key: "v"})[key] == "***") is secret


def test_flags_and_model_sections_are_never_redacted():
    from configuration.redact import redact

    tree = {"model": {"tokenizer": {"bias": False}, "encoder": {"cls_token": True}}}
    assert redact(tree) == tree


@pytest.mark.parametrize("url, shown", [
    ("postgresql://user:PASS@db.example:5432/mlflow", "postgresql://***@db.example:5432/mlflow"),
    ("https://user:PASS@minio:9000", "https://***@minio:9000"),
    ("http://PASS@minio:9000/bucket", "http://***@minio:9000/bucket"),
    ("s3://KEY:SE/CR+PASS@bucket/shards", "s3://***@bucket/shards"),
    ("postgresql://user:p@PASS@db/mlflow", "postgresql://***@db/mlflow"),
])
def test_url_userinfo_is_redacted_in_every_value_and_in_text(url, shown, capsys):
    from configuration.redact import redact, redact_urls

    def tree(value: str) -> dict:
        return {"mlflow": {"tracking_uri": value}, "data": {"datasets": [{"url": value}], "hosts": [value]},
                "storage_options": {"client_kwargs": {"endpoint_url": value}}}

    assert redact(tree(url)) == tree(shown)
    assert redact_urls(f"not found: {url}/x.json (retried)") == f"not found: {shown}/x.json (retried)"

    def main():
        raise ConfigError(f"cannot reach {url}")

    assert run_cli(main) == 2
    assert capsys.readouterr().err == f"error: cannot reach {shown}\n"


@pytest.mark.parametrize("text", [
    "https://minio:9000/bucket", "sqlite:////runs/a@b/mlflow.db", "https://host/users/a@b.c",
    "s3://bucket/path", "git@github.com:org/repo", "see ./runs for user@host",
])
def test_text_without_url_userinfo_is_left_alone(text):
    from configuration.redact import redact_urls

    assert redact_urls(text) == text

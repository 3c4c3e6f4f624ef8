from pathlib import Path

import pytest

from robustprec.config import Config, apply_overrides, load_config, parse_override
from robustprec.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_smoke_config_loads_and_overrides_apply():
    cfg = load_config(
        REPO / "configs" / "smoke.yaml", ["optim.lr=3e-3", "train.zero_stage=2", "data.path=corpus.txt"]
    )
    assert cfg.optim.lr == pytest.approx(3e-3)
    assert cfg.train.zero_stage == 2
    assert cfg.data.path == str(Path.cwd() / "corpus.txt")  # relative paths resolve against the working dir
    assert cfg.model.preset == "tiny"


def test_defaults_without_file():
    cfg = load_config(None, ["seed=5", "data_seed=9"])
    assert cfg.effective_init_seed == 5 and cfg.effective_data_seed == 9
    assert isinstance(cfg, Config)


def test_override_values_are_yaml_typed():
    assert parse_override("optim.betas=[0.9, 0.99]") == (["optim", "betas"], [0.9, 0.99])
    assert parse_override("train.compile=true") == (["train", "compile"], True)
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optim.lrr=1", "unknown key 'optim.lrr'; valid keys here: lr, betas"),
        ("model.preset=huge", "valid presets: tiny"),
        ("train.zero_stage=5", "train.zero_stage"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=fast", "optim.lr"),
        ("numerics.backend=fp7", "valid backends: fp32, bf16"),
        ("train.global_batch_size=10", "multiple of micro_batch_size"),
        ("bogus=1", "unknown key 'bogus'"),
    ],
)
def test_invalid_keys_and_values_name_the_valid_choices(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(REPO / "configs" / "smoke.yaml", [override])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"optim": 3}, ["optim.lr=1"])


def test_relative_data_paths_become_absolute(tmp_path, monkeypatch):
    from robustprec.config import load_config

    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        None, ["data.path=corpus/a.txt", "data.tokenizer=tok/tokenizer.json", "data.cache_dir=c"]
    )
    assert cfg.data.path == str(tmp_path / "corpus" / "a.txt")
    assert cfg.data.tokenizer == str(tmp_path / "tok" / "tokenizer.json")
    assert cfg.data.cache_dir == str(tmp_path / "c")
    untouched = load_config(None, ["data.path=s3://bucket/x.parquet", "data.tokenizer=byte"])
    assert untouched.data.path == "s3://bucket/x.parquet" and untouched.data.tokenizer == "byte"
    assert load_config(None, []).data.path == ""


def test_fp16_needs_a_zero_stage_with_loss_scaling():
    with pytest.raises(ConfigError, match=r"fp16 needs train\.zero_stage 1, 2 or 3"):
        load_config(None, ["numerics.backend=fp16"])
    assert load_config(None, ["numerics.backend=fp16", "train.zero_stage=1"]).train.zero_stage == 1

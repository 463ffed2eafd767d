"""Training config files: every argument from YAML or JSON, typos and bad values refused."""

from pathlib import Path

import pytest

from training.config import PACKAGED_MODEL, ConfigError, TrainingConfig, resolve_base_model


def test_yaml_and_json_files(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text("max_length: 64\nadapt: false\nbase_model: bert-base-uncased\n")
    (tmp_path / "c.json").write_text('{"epochs": 3, "pos_weight": "none"}')
    from_yaml = TrainingConfig.from_file(tmp_path / "c.yml")
    assert (from_yaml.max_length, from_yaml.adapt, from_yaml.base_model) == (64, False, "bert-base-uncased")
    from_json = TrainingConfig.from_file(tmp_path / "c.json")
    assert (from_json.epochs, from_json.pos_weight) == (3, "none")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_lenght: 64\n", "max_lenght: Extra inputs are not permitted"),
        ("max_length: 4\n", "max_length: Input should be greater than or equal to 16"),
        ("- a list\n", "expected a mapping"),
        ("max_length: [unclosed\n", "is not valid YAML"),
        ("64: max_length\n", "64: Keys should be strings"),  # was a TypeError traceback
        ("epochs: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),  # was a RecursionError
    ],
)
def test_bad_config_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        TrainingConfig.from_file(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_the_packaged_base_model_resolves_to_a_local_folder() -> None:
    folder = Path(resolve_base_model(PACKAGED_MODEL))
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert resolve_base_model("bert-base-uncased") == "bert-base-uncased"

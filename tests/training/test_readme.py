"""README.md stays true: its configuration table is the one the settings object generates."""

from tests.conftest import REPO_ROOT
from training.settings_reference import reference_table


def test_readme_configuration_reference_is_current() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert reference_table() in readme, (
        "README.md's configuration table is stale: regenerate it with "
        "`python -m training.settings_reference` and paste it between the settings-reference markers"
    )
    assert readme.count("<!-- settings-reference:begin -->") == 1, "one settings table, markers once"
    assert readme.count("<!-- settings-reference:end -->") == 1, "one settings table, markers once"

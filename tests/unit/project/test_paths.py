"""pipeline/paths.py in a checkout: the checkout's own folders, and children run from the checkout itself
(installed from the wheel: tests/integration/test_installed.py)."""
from pipeline import paths
from tests.conftest import REPO


def test_a_checkout_reads_its_own_conf_and_schemas():
    assert paths.CHECKOUT == paths.SOURCE_ROOT == paths.PROJECT_ROOT == REPO
    assert paths.CONF_DIR == REPO / "conf" and paths.SCHEMAS_DIR == REPO / "docs" / "schemas"
    assert paths.code_root() == REPO  # no folder of links: children import the checkout, as they always did


def test_a_folder_without_conf_is_not_a_checkout(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'other'\n")  # site-packages inside some project
    assert paths._checkout(tmp_path) is None
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("defaults: []\n")
    assert paths._checkout(tmp_path) == tmp_path

"""calibration=hub takes the dataset's configuration name and revision, as datasets' and Optimum's example scripts
do; a dataset repository laid out like the hub's (README.md `configs:`) stands in for the local cache."""
from __future__ import annotations

import csv

import pytest

from calibration.errors import CalibrationError
from calibration.sources import load_texts
from pipeline.builder.checkpoints import dataset_identity
from pipeline.config import compose_config


@pytest.fixture
def hub_repository(tmp_path):
    root = tmp_path / "my-dataset"
    for config, words in (("sentences", "a sentence from the default configuration"),
                          ("pairs", "a sentence from the pairs configuration")):
        (root / config).mkdir(parents=True)
        with open(root / config / "train.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text"])
            writer.writerows([(f"{words}, number {i}",) for i in range(40)])
    (root / "README.md").write_text("---\nconfigs:\n- config_name: sentences\n  data_files: sentences/*.csv\n"
                                    "  default: true\n- config_name: pairs\n  data_files: pairs/*.csv\n---\n")
    return root


def calibration(*overrides):
    return compose_config(["calibration=hub", *overrides]).calibration


def test_the_config_name_selects_the_configuration(hub_repository, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    default = load_texts(calibration(f"calibration.hub_name={hub_repository}"))
    pairs = load_texts(calibration(f"calibration.hub_name={hub_repository}", "calibration.hub_config_name=pairs"))
    assert all("default configuration" in t for t in default) and all("pairs configuration" in t for t in pairs)
    # the stamp names the dataset by its folder's name (never this machine's path), its configuration and revision
    assert dataset_identity(calibration(f"calibration.hub_name={hub_repository}", "calibration.hub_config_name=pairs",
                                        "calibration.hub_revision=v1.0")) == "my-dataset/pairs@v1.0"


def test_an_unknown_configuration_is_refused_naming_it(hub_repository, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(CalibrationError, match=r"dataset .*my-dataset/triples split 'train' could not be loaded"):
        load_texts(calibration(f"calibration.hub_name={hub_repository}", "calibration.hub_config_name=triples"))

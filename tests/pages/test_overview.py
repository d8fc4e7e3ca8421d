"""The Datasets and models page lists the datasets (with their availability) and the architectures."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def test_overview_lists_datasets_and_models():
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/overview.py").run()
    assert not at.exception
    datasets, models = at.dataframe[0].value, at.dataframe[1].value
    assert "mnist5k" in set(datasets["name"]) and "embedded" in set(datasets["availability"])
    assert {"cnn_l", "resnet56", "efficientnet_b0"} <= set(models["name"])

"""Train a model from the zoo on a dataset; the run goes to the background job runner."""

import streamlit as st

from engine.data import DATASETS, DEFAULT_ROOT
from engine.models import MODELS
from engine.tasks import TrainTask
from engine.train import TrainConfig
from pages.shared import open_runner_or_stop, show_error

st.title("Train a model")
runner = open_runner_or_stop()

with st.form("train"):
    left, right = st.columns(2)
    dataset = left.selectbox("Dataset", [*DATASETS.names(), "imagefolder"], help="mnist5k and digits are embedded.")
    folder = left.text_input("Image folder (for imagefolder)", placeholder="/path/with/train/<class>/images")
    data_root = left.text_input("Data root (torchvision datasets)", value=DEFAULT_ROOT)
    download = left.checkbox("Download the dataset if it is missing", value=False)
    model = right.selectbox("Architecture", MODELS.names())
    epochs = right.number_input("Epochs", 1, 500, 3)
    batch_size = right.number_input("Batch size", 1, 4096, 64)
    lr = right.number_input("Learning rate", 1e-5, 5.0, 0.05, format="%.4f")
    optimizer = right.selectbox("Optimizer", ["sgd", "adam"])
    seed = right.number_input("Seed", 0, 2**31 - 1, 0)
    augment = right.checkbox("Augment (random shifts, flips where valid)")
    submitted = st.form_submit_button("Start training", type="primary")

if submitted:
    try:
        name = f"imagefolder:{folder}" if dataset == "imagefolder" else dataset
        cfg = TrainTask(dataset=name, model=model, data_root=data_root, download=download,
                        train=TrainConfig(epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                                          optimizer=optimizer, seed=int(seed), augment=augment))
        run_id = runner.submit("train", cfg)
        st.success(f"Queued run {run_id}. Follow it on the Runs page.")
    except Exception as e:  # noqa: BLE001 - shown as a message
        show_error(e)

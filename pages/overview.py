"""What the lab can work with: the datasets (and whether each is on this machine) and the model zoo."""

import pandas as pd
import streamlit as st

from engine.model.data import DEFAULT_ROOT
from engine.model.data import catalog as data_catalog
from engine.model.zoo import catalog as model_catalog
from pages.shared import through_the_app

through_the_app()

st.title("Datasets and models")
st.caption("Train an image classifier or bring your own weights, compress it, and see what each choice costs and buys.")

st.subheader("Datasets")
root = st.text_input("Data root for torchvision datasets", value=DEFAULT_ROOT,
                     help="mnist, fashion_mnist, cifar10, cifar100 and svhn are read from here; "
                          "they are downloaded only when you ask for it.")
st.dataframe(pd.DataFrame(data_catalog(root)), hide_index=True)

st.subheader("Architectures")
models = pd.DataFrame(model_catalog())
models["stages"] = models["stages"].map(", ".join)
st.dataframe(models, hide_index=True)

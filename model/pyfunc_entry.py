"""The pyfunc as MLflow's "models from code": MLflow runs this file, when it logs the model and when a
client loads it, to make the model object, so nothing is pickled (a pickled `PythonModel` is code run on
load, which MLflow warns of at every `ews train`). Only MLflow runs it; nothing imports it."""

import mlflow.models

from model.pyfunc import BundleModel

mlflow.models.set_model(BundleModel())

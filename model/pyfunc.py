"""The MLflow pyfunc face of a model bundle: one logged model that any MLflow client can load and call.

Input: feature rows (categoricals as plain strings, numbers as floats); output: raw score and PD. Lives in
the shared kernel beside the bundle so training (which logs it) and serving (which loads it) share it.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from model.bundle import ModelBundle

BUNDLE_ARTIFACT = "bundle"
PYFUNC_ENTRY = Path(__file__).with_name("pyfunc_entry.py")  # what MLflow runs to make the model object


class BundleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.bundle = ModelBundle.load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        raw = self.bundle.raw_score(model_input)
        return pd.DataFrame({"raw_score": raw, "pd": self.bundle.pd_from_raw(raw)})


def bundle_from_model_uri(model_uri: str) -> ModelBundle:
    """Download a logged loan-ews model (e.g. models:/name@champion) and load its bundle."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    found = list(local.rglob("bundle.json"))
    if not found:
        raise ValueError(f"{model_uri!r} is not a loan-ews model: no bundle.json in its artifacts")
    return ModelBundle.load(found[0].parent)

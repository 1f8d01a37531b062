"""What crosses from training to serving: the model bundle, its MLflow pyfunc face and the typed spec.

Imports `features` only; `training` builds bundles, `serving` loads them.
"""

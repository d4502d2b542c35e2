"""Pipeline stages: one module a stage, each with a ``run(...)`` function (see dvc.yaml)."""

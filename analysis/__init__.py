"""Scaling-law analysis: run tables (MLflow/CSV) -> fitted laws with uncertainty -> figures and tables."""

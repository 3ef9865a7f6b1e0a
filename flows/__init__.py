"""Prefect flows: wiring only (which stage after which, the gates, the snapshot)."""

"""Prefect tasks: thin wrappers that call one visionloop function each (batching, retries,
artifacts). No pixel loops and no thresholds live here."""

"""Refresh: what changed since the last snapshot, whether it drifted, and what to label next.

``drift.compare`` tests each feature between the reference snapshot and the current curated
data; ``select.select_for_annotation`` spends a labelling budget on new, rare and diverse items.
Both are pure functions over DataFrames; ``visionloop.stages.refresh`` wires them to the files.
"""

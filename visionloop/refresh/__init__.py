"""Refresh: what came in since the last snapshot, whether it drifted, what to label next, the
labelling round trip, rebalancing, and what changed between snapshots.

Modules (pure functions over tables unless noted; ``visionloop.stages.refresh`` wires them to
the files, ``flows/refresh.py`` to the schedule):

- ``incoming``: new files in the source by content hash, before any stage runs;
- ``embed`` (pixels) and ``features``: the offline image embedding and the named features;
- ``drift``: per-feature, per-slice and image-level (MMD) drift tests, Holm-adjusted;
- ``select``: the budgeted labelling shortlist, each pick with its reason;
- ``roundtrip``: task exports (Label Studio, CVAT) and the intake of returned exports;
- ``rebalance`` (pixels): albumentations derivations of under-represented groups, train only;
- ``diff`` and ``history``: the difference between two snapshots;
- ``request``: the flows' parameter model and its truthful recording in params.yaml;
- ``synthetic``: camera batches with planted shifts for tests and benchmarks;
- ``cli``: ``visionloop serve``, ``visionloop diff``, ``visionloop refresh ...``.
"""

"""Label QA: the checks a labelling lead runs on an annotation table, offline.

- ``checks``: the catalogue of checks (name, family, default severity, what it means) and the
  findings table every check writes into (one row per problem, with the items concerned);
- ``structure``: Datumaro's dataset validators with its default thresholds (missing and
  undefined labels/attributes, few samples, imbalance, tiny or invalid boxes, outliers,
  skewed distributions);
- ``geometry``: shapes against their image and each other (outside the image, degenerate or
  self-intersecting polygons, mask/box disagreement, empty masks, duplicates);
- ``tracks``: video tracks (gaps, id switches, ``outside``/keyframe consistency);
- ``agreement`` and ``alpha``: several annotators on one item (Hungarian matching on IoU, F1,
  mean IoU, Krippendorff's alpha with distance 1 - IoU, scorecards) and gold/honeypot scoring
  with CVAT's definitions;
- ``run``: everything at once (``run_qa``), the workspace wrapper the validate stage and the
  import_annotations gate use, and the files it writes;
- ``cli``: ``visionloop labels qa TABLE.parquet``.

This package file stays empty on purpose: the CLI imports ``visionloop.qa.cli`` at start-up.
"""

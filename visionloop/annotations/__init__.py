"""Annotations: vendor exports -> one canonical table (``ANNOTATION_SCHEMA``), matched to items.

- ``table``: records, the canonical category map, coordinate checks, ``ImportResult``.
- ``formats``: one module per format (``coco``, ``yolo``) behind the ``AnnotationReader``
  interface and a name-keyed registry (``get_reader``, ``detect_format``).
- ``match``: annotation -> manifest row (relative path, file name, subset folder, content hash)
  and the import report.

The import stage (``visionloop/stages/import_annotations.py``) only wires these together.
"""

from visionloop.annotations.table import (
    AnnotationImportError,
    AnnotationRecord,
    CategoryMap,
    ImageRecord,
    ImportIssue,
    ImportResult,
    Limits,
    combine_results,
)

__all__ = [
    "AnnotationImportError",
    "AnnotationRecord",
    "CategoryMap",
    "ImageRecord",
    "ImportIssue",
    "ImportResult",
    "Limits",
    "combine_results",
]

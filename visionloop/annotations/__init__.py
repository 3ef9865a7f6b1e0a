"""Annotations: vendor exports <-> one canonical table (``ANNOTATION_SCHEMA``), matched to items.

- ``table``: records, the canonical category map, the geometry convention (shapes, oriented
  boxes, keypoints), coordinate and path checks, ``ImportResult``, ``ParquetSink``.
- ``formats``: one module per format (coco, yolo, label_studio, voc, cvat, labelme, mot, sam)
  behind the ``AnnotationReader`` interface and a name-keyed registry (``get_reader``,
  ``detect_format``); writers ``save_<fmt>`` for coco, yolo, label_studio, cvat.
- ``export``: ``export_table`` with a ``LossReport``, tables on disk with their category map,
  ``import_to_table`` (streamed for COCO).
- ``match``: annotation -> manifest row (relative path, file name or stem, subset folder,
  content hash) and the import report.
- ``jsonscan`` / ``xmlstream``: bounded-memory JSON arrays and safe (defusedxml) XML.
- ``cli``: ``visionloop labels import|export|detect|formats``.

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

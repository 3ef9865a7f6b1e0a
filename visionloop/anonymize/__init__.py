"""Privacy redaction: detectors (plug-in registry), redaction functions, metadata-free publishing.

Heavy dependencies (onnxruntime, OpenCV, Pillow) are imported inside the functions that use
them, so importing this package costs only numpy.
"""

from visionloop.anonymize.detectors import (
    Detector,
    DetectorError,
    Regions,
    get_detector,
    known_detectors,
    register_detector,
)

__all__ = [
    "Detector",
    "DetectorError",
    "Regions",
    "get_detector",
    "known_detectors",
    "register_detector",
]

"""The review picture as a DICOM Secondary Capture Image (PS3.3 A.8.1), built with highdicom.

Same patient and study as the source series, its own series (SeriesNumber 2000 + the source's),
RGB 8-bit, ImageType DERIVED\\SECONDARY, Burned In Annotation YES (the tags and banner are in the
pixels, PS3.3 C.7.6.1.1.5), and references to the source series and to the source image nearest the
plane (Source Image Sequence; with its Referenced Frame Number when the source is one multi-frame
Enhanced or Legacy Converted Enhanced MR image), so a PACS files it beside the MR series it was made from.
Where measurements were taken, the series holds a second image, the measurement table (``build_table_sc``):
one constructor makes both, so they share every series and study attribute.

Where the source images lie is taken from the loaded volume (``dicom_input.Volume``), never from the
headers: a multi-frame image keeps its positions and orientation in its functional groups, not at the
top level of the dataset.
"""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from spineseg import APP_NAME, __version__
from spineseg.input.dicom_input import Volume
from spineseg.outputs.image_coordinates import place_on_nearest_image
from spineseg.outputs.review_image import ReviewPlane
from spineseg.outputs.seg_writer import derived_uid, offset_series_number

SC_SERIES_OFFSET = 2000


def nearest_source(volume: Volume, plane: ReviewPlane) -> tuple[Dataset, int | None]:
    """The source image whose plane is nearest the review plane's centre: its dataset and, for a multi-frame
    source, its frame number (1-based; None for a single-frame image). Slice positions and the slice normal
    come from ``volume.affine`` (slice k lies at affine @ (k, 0, 0)), so single- and multi-frame sources are
    placed alike."""
    centre = plane.origin + plane.row_dir * plane.spacing * plane.grey.shape[1] / 2 \
        + plane.col_dir * plane.spacing * plane.grey.shape[0] / 2
    placed = place_on_nearest_image(volume, [centre])
    return placed.dataset, placed.frame


def build_review_sc(volume: Volume, rgb: np.ndarray, plane: ReviewPlane, seg_uid: str,
                    phantom: bool) -> Dataset:
    """The Secondary Capture of the review picture of ``volume`` (the loaded source series); its UIDs derive
    from the SEG's (which follow the exact source instances, weights and settings), so the picture is
    replaced, not duplicated, when the same result is resent."""
    return _secondary_capture(volume, rgb, plane, seg_uid, phantom, instance=("review-instance", 1),
                              orientation=("P", "F"),       # columns run to posterior, rows to the feet
                              derivation=f"Mid-sagittal plane resampled at {plane.spacing:.2f} mm with "
                                         f"TotalSpineSeg labels by {APP_NAME} {__version__}")


def build_table_sc(volume: Volume, rgb: np.ndarray, plane: ReviewPlane, seg_uid: str, phantom: bool) -> Dataset:
    """The measurement table (``measurement_table``) as the second image of the review picture's series:
    the same series, its own instance (number 2, UID derived from the SEG's as the picture's is). A table
    has no patient orientation (Patient Orientation, Type 2, is sent empty); it references the same source
    image as the picture."""
    return _secondary_capture(volume, rgb, plane, seg_uid, phantom, instance=("measurement-table-instance", 2),
                              orientation=None,
                              derivation=f"Per-level measurements of the TotalSpineSeg labels (as in the "
                                         f"measurement SR) by {APP_NAME} {__version__}")


def _secondary_capture(volume: Volume, rgb: np.ndarray, plane: ReviewPlane, seg_uid: str, phantom: bool, *,
                       instance: tuple[str, int], orientation: tuple[str, str] | None, derivation: str) -> Dataset:
    """One image of the review series: ``instance`` is its UID key and Instance Number; ``orientation`` its
    Patient Orientation (rows, columns), None for an image without one."""
    import highdicom as hd

    ref, frame = nearest_source(volume, plane)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref,
        pixel_array=np.ascontiguousarray(rgb, dtype=np.uint8),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=derived_uid("review-series", seg_uid),
        series_number=offset_series_number(ref, SC_SERIES_OFFSET),
        sop_instance_uid=derived_uid(instance[0], seg_uid),
        instance_number=instance[1],
        manufacturer=APP_NAME,
        patient_orientation=orientation or ("P", "F"),    # highdicom wants one in the PATIENT coordinate system
    )
    if orientation is None:                              # Type 2: sent empty for an image without one
        sc.PatientOrientation = None
    sc.BurnedInAnnotation = "YES"
    # General Series: Laterality (2C) is needed unless the body part is known to be unpaired, so carry the
    # source's BodyPartExamined (SPINE) and otherwise send Laterality empty, as Type 2 allows
    if getattr(ref, "BodyPartExamined", None):
        sc.BodyPartExamined = ref.BodyPartExamined
    else:
        sc.Laterality = None
    sc.SeriesDescription = ("PHANTOM MODEL NOT FOR CLINICAL USE; " if phantom else "") + "Spine levels review"
    sc.SeriesDescription = sc.SeriesDescription[:64]
    sc.DerivationDescription = derivation[:1024]
    sc.SoftwareVersions = __version__
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = (
        codes.DCM.SegmentationImageDerivation.value, "DCM", codes.DCM.SegmentationImageDerivation.meaning)
    sc.DerivationCodeSequence = [code]
    source = Dataset()
    source.ReferencedSOPClassUID = ref.SOPClassUID
    source.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    if frame is not None:
        source.ReferencedFrameNumber = frame
    sc.SourceImageSequence = [source]
    return sc

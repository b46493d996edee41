"""The review picture as a DICOM Secondary Capture Image (PS3.3 A.8.1), built with highdicom.

Same patient and study as the source series, its own series (SeriesNumber 2000 + the source's),
RGB 8-bit, ImageType DERIVED\\SECONDARY, Burned In Annotation YES (the tags and banner are in the
pixels, PS3.3 C.7.6.1.1.5), and references to the source series and to the source image nearest the
plane (Source Image Sequence), so a PACS files it beside the MR series it was made from.
"""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from spineseg import APP_NAME, __version__
from spineseg.outputs.review_image import ReviewPlane
from spineseg.outputs.seg_writer import derived_uid, offset_series_number

SC_SERIES_OFFSET = 2000


def nearest_source(datasets: list[Dataset], plane: ReviewPlane) -> Dataset:
    """The source image whose plane is nearest the review plane's centre."""
    centre = plane.origin + plane.row_dir * plane.spacing * plane.grey.shape[1] / 2 \
        + plane.col_dir * plane.spacing * plane.grey.shape[0] / 2

    def distance(ds):
        iop = np.asarray(ds.ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        return abs((centre - np.asarray(ds.ImagePositionPatient, float)) @ normal)
    return min(datasets, key=distance)


def build_review_sc(source_datasets: list[Dataset], rgb: np.ndarray, plane: ReviewPlane, seg_uid: str,
                    phantom: bool) -> Dataset:
    """The Secondary Capture; its UIDs derive from the SEG's (which follow the exact source instances,
    weights and settings), so the picture is replaced, not duplicated, when the same result is resent."""
    import highdicom as hd

    ref = nearest_source(source_datasets, plane)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref,
        pixel_array=np.ascontiguousarray(rgb, dtype=np.uint8),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=derived_uid("review-series", seg_uid),
        series_number=offset_series_number(ref, SC_SERIES_OFFSET),
        sop_instance_uid=derived_uid("review-instance", seg_uid),
        instance_number=1,
        manufacturer=APP_NAME,
        patient_orientation=("P", "F"),       # columns run to posterior, rows to the feet
    )
    sc.BurnedInAnnotation = "YES"
    # General Series: Laterality (2C) is needed unless the body part is known to be unpaired, so carry the
    # source's BodyPartExamined (SPINE) and otherwise send Laterality empty, as Type 2 allows
    if getattr(ref, "BodyPartExamined", None):
        sc.BodyPartExamined = ref.BodyPartExamined
    else:
        sc.Laterality = None
    sc.SeriesDescription = ("PHANTOM MODEL NOT FOR CLINICAL USE; " if phantom else "") + "Spine levels review"
    sc.SeriesDescription = sc.SeriesDescription[:64]
    sc.DerivationDescription = (f"Mid-sagittal plane resampled at {plane.spacing:.2f} mm with TotalSpineSeg "
                                f"labels by {APP_NAME} {__version__}")[:1024]
    sc.SoftwareVersions = __version__
    derivation = Dataset()
    derivation.CodeValue, derivation.CodingSchemeDesignator, derivation.CodeMeaning = (
        codes.DCM.SegmentationImageDerivation.value, "DCM", codes.DCM.SegmentationImageDerivation.meaning)
    sc.DerivationCodeSequence = [derivation]
    source = Dataset()
    source.ReferencedSOPClassUID = ref.SOPClassUID
    source.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    sc.SourceImageSequence = [source]
    return sc

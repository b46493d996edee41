"""Per-level measurements as a DICOM SR Measurement Report (TID 1500), built with highdicom.

One Volumetric ROI measurement group (TID 1411) per measured structure, each referencing its SEG
segment (Referenced Segment: the SEG's SOP Instance UID and segment number, and the source series)
with the segment's own Tracking Identifier and Tracking Unique Identifier, its Segmented Property
Type as Finding Type, and the SEG's algorithm (TotalSpineSeg, release or "phantom", checkpoint
digests). Concepts and units:

* volume: SCT 118565006 "Volume", UCUM mm3;
* disc height and vertebral body height: DCM 121207 "Height", UCUM mm, with the structure as
  Finding Site and CID 2 topographical modifier Anterior (SCT 255549009), Central (SCT 26216008)
  or Posterior (SCT 255551008);
* spinal canal and cord cross-sectional area at a disc level: SCT 42798000 "Area", UCUM mm2, Finding
  Site "Level of X/Y intervertebral disc" (CID 1003; the disc itself for L5-L6, which has no level
  concept) with modifier Transverse (SCT 62824007); antero-posterior diameter: SCT 81827009
  "Diameter", UCUM mm, same site with modifier Sagittal (SCT 30730003), the canal's sagittal
  diameter.

Made with the bundled phantom weights, the SeriesDescription starts with the phantom warning and
the algorithm version says "phantom", as in the SEG.

Nothing measurable (only the cord and canal segmented, or every structure cut by the field of view so
that no volume, height or section could be taken): no SR is made. TID 1500 holds measurements; one
without any would be a document a reader opens in the PACS to find empty, and highdicom refuses it.
The run says why in its report and the measurements JSON still lists the structures with their notes.
"""
from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from spineseg import APP_NAME, __version__
from spineseg.outputs.codes_table import STRUCTURES
from spineseg.labels import CANAL, CORD
from spineseg.outputs.measurements import LevelMeasurements
from spineseg.outputs.seg_writer import derived_uid, offset_series_number

SR_SERIES_OFFSET = 3000
_MODIFIER = {"anterior": codes.SCT.Anterior, "centre": codes.SCT.Central, "posterior": codes.SCT.Posterior}


def _coded(triple):
    from highdicom.sr.coding import CodedConcept
    return CodedConcept(*triple)


def disc_level_site(disc_label: int):
    """CID 1003 "Level of X/Y intervertebral disc" for a disc label, else the disc's own concept."""
    upper, lower = STRUCTURES[disc_label]["name"].split(" ")[0].split("-")
    concept = getattr(codes.SCT, f"LevelOf{upper}{lower}IntervertebralDisc", None)
    return concept if concept is not None else _coded(STRUCTURES[disc_label]["type"])


def _segments_by_label(seg: Dataset) -> dict[int, Dataset]:
    by_name = {entry["name"]: value for value, entry in STRUCTURES.items()}
    return {by_name[item.SegmentLabel]: item for item in seg.SegmentSequence if item.SegmentLabel in by_name}


def _group(seg: Dataset, segment: Dataset, value: int, measurements: list, algorithm):
    import highdicom as hd
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=str(segment.TrackingUID),
                                                     identifier=str(segment.TrackingID)),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=int(segment.SegmentNumber),
            source_series=hd.sr.SourceSeriesForSegmentation(
                str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID))),
        finding_type=_coded(STRUCTURES[value]["type"]),
        algorithm_id=algorithm,
        measurements=measurements,
    )


def build_measurement_sr(seg: Dataset, source_datasets: list[Dataset], levels: list[LevelMeasurements],
                         phantom: bool, volume=None) -> Dataset | None:
    """Comprehensive 3D SR holding every measurement of ``levels``, tied to ``seg``'s segments; None when
    there is no measurement to hold (see the module's documentation)."""
    import highdicom as hd

    mm, mm2, mm3 = codes.UCUM.Millimeter, codes.UCUM.SquareMillimeter, codes.UCUM.CubicMillimeter
    segments = _segments_by_label(seg)
    # a LABELMAP SEG may describe the background first, without an algorithm
    algo = next(item.SegmentationAlgorithmIdentificationSequence[0] for item in seg.SegmentSequence
                if "SegmentationAlgorithmIdentificationSequence" in item)
    algorithm = hd.sr.AlgorithmIdentification(name=str(algo.AlgorithmName), version=str(algo.AlgorithmVersion))
    per_segment: dict[int, list] = {}

    def add(value, name, number, unit, site=None, modifier=None):
        if number is None or value not in segments:
            return
        sites = [hd.sr.FindingSite(anatomic_location=site, topographical_modifier=modifier)] if site else None
        per_segment.setdefault(value, []).append(
            hd.sr.Measurement(name=name, value=round(float(number), 2), unit=unit, finding_sites=sites))

    for m in levels:
        own = _coded(STRUCTURES[m.label]["type"])
        add(m.label, codes.SCT.Volume, m.volume_mm3, mm3)
        for where, modifier in _MODIFIER.items():
            add(m.label, codes.DCM.Height, getattr(m, f"height_{where}_mm"), mm, own, modifier)
        if m.canal_area_mm2 is not None:
            level = disc_level_site(m.label)
            add(CANAL, codes.SCT.Area, m.canal_area_mm2, mm2, level, codes.SCT.Transverse)
            add(CANAL, codes.SCT.Diameter, m.canal_ap_diameter_mm, mm, level, codes.SCT.Sagittal)
            add(CORD, codes.SCT.Area, m.cord_area_mm2, mm2, level, codes.SCT.Transverse)
    groups = [_group(seg, segments[v], v, ms, algorithm) for v, ms in per_segment.items()]
    if not groups:
        return None
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid("device", APP_NAME), name=APP_NAME, manufacturer_name=APP_NAME,
            model_name="TotalSpineSeg", serial_number="spine-seg"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        title=codes.cid7021.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *source_datasets],
        content=report,
        series_instance_uid=derived_uid("sr-series", str(seg.SOPInstanceUID)),
        series_number=offset_series_number(source_datasets[0], SR_SERIES_OFFSET),
        sop_instance_uid=derived_uid("sr-instance", str(seg.SOPInstanceUID)),
        instance_number=1,
        manufacturer=APP_NAME,
        is_complete=True,
    )
    sr.SeriesDescription = (("PHANTOM MODEL NOT FOR CLINICAL USE; " if phantom else "")
                            + "Spine measurements (TotalSpineSeg)")[:64]
    sr.SoftwareVersions = __version__
    return sr

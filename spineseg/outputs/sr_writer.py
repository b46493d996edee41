"""Per-level measurements as a DICOM SR Measurement Report (TID 1500), built with highdicom, that viewers draw.

One Measurement Group (TID 1501) per value, so that each value is one measurement a viewer can place, list
and track, and each carries where it was taken on the source images:

* every length (disc height anterior / centre / posterior, vertebral body heights, the canal's sagittal
  diameter): its NUM is INFERRED FROM a 2-point SCOORD POLYLINE (TID 320) SELECTED FROM the source image
  nearest the line, its two end points projected onto that image (``image_coordinates``). The group's
  Tracking Identifier is ``Cornerstone3DTools@^0.1.0:Length``, the name OHIF (through
  @cornerstonejs/adapters) gives a length it can load as its own Length tool: listed in the measurement
  panel, drawn, tracked. A line too oblique to any image to be drawn at its true length (drawn within
  ``DRAWN_TOLERANCE_MM``) is a point at its middle instead, never a shorter line;
* every volume (vertebra, disc, sacrum): a SCOORD POINT at the structure's centroid on the nearest image;
* every cross-sectional area (canal and cord at a disc level): a SCOORD POINT at the section's centre.

A point's group is identified as ``Cornerstone3DTools@^0.1.0:ArrowAnnotate``: OHIF loads it as an arrow
pointing at the place, whose text is the group's Comment, which for a point also carries the value and unit
("L4-L5 canal area 340.68 mm2"), so that after tracking the reader still sees every number on the image.

Each group says what was measured where: a Comment (DCM 121106, TEXT) holds the reader's label, e.g. "L4-L5 disc
height, centre" (the label OHIF 3.12 and 3.13 show, before and after tracking; a point's also its value);
Finding (DCM 121071) is the structure, as the SEG's Segmented Property Type codes it; Finding Site is the
structure (CID 7603 / 7604 concepts) or, for the canal and cord, the disc level (CID 1003 "Level of X/Y
intervertebral disc"; the disc itself for L5-L6), with the CID 2 topographical modifier Anterior (SCT
255549009), Central (SCT 26216008), Posterior (SCT 255551008), Transverse (SCT 62824007) or Sagittal (SCT
30730003); the algorithm (TotalSpineSeg, release or "phantom", checkpoint digests) as in the SEG. The NUM itself
has no child but its coordinates: OHIF drops a value with any other. A volume's group carries its SEG segment's
Tracking Unique Identifier (the link to the segment, as TID 1411 would give it: OHIF merges groups that share a
Tracking Unique Identifier, so only the volume, one per segment, carries it); the SEG is in the evidence.

Why not TID 1411 Volumetric ROI groups with a Referenced Segment (what this writer made before): OHIF 3.12
and 3.13 place a measurement only where it has image coordinates, and a group without them stops its SR
loading with an error; no viewer draws a Referenced Segment. Concepts and units:

* volume: SCT 118565006 "Volume", UCUM mm3;
* disc height and vertebral body height: DCM 121207 "Height", UCUM mm;
* spinal canal and cord cross-sectional area: SCT 42798000 "Area", UCUM mm2; the canal's
  antero-posterior diameter: SCT 81827009 "Diameter", UCUM mm.

Made with the bundled phantom weights, the SeriesDescription starts with the phantom warning and
the algorithm version says "phantom", as in the SEG.

Nothing measurable (only the cord and canal segmented, or every structure cut by the field of view so
that no volume, height or section could be taken): no SR is made. TID 1500 holds measurements; one
without any would be a document a reader opens in the PACS to find empty, and highdicom refuses it.
The run says why in its report and the measurements JSON still lists the structures with their notes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from spineseg import APP_NAME, __version__
from spineseg.outputs.codes_table import STRUCTURES
from spineseg.labels import DISCS, SACRUM
from spineseg.outputs.image_coordinates import drawn_length_mm, place_on_nearest_image
from spineseg.outputs.measurements import LevelMeasurements
from spineseg.outputs.seg_writer import derived_uid, offset_series_number

SR_SERIES_OFFSET = 3000
OHIF_LENGTH = "Cornerstone3DTools@^0.1.0:Length"
OHIF_ARROW = "Cornerstone3DTools@^0.1.0:ArrowAnnotate"
DRAWN_TOLERANCE_MM = 0.05
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


@dataclass(frozen=True)
class Value:
    """One measured value and how the SR presents it."""

    label: str                 # the reader's label, e.g. "L4-L5 disc height, centre"
    field: str                 # LevelMeasurements field it comes from
    number: float
    name: object               # concept name of the NUM
    unit: object
    site: object               # finding site concept
    modifier: object | None
    points: list               # LPS points: 2 for a length, 1 otherwise
    structure: int             # the label value the value belongs to


def measured_values(levels: list[LevelMeasurements]) -> list[Value]:
    """Every value of ``levels`` the SR holds, in anatomical order, each with its label and where it was taken."""
    mm, mm2, mm3 = codes.UCUM.Millimeter, codes.UCUM.SquareMillimeter, codes.UCUM.CubicMillimeter
    out = []
    for m in levels:
        own = _coded(STRUCTURES[m.label]["type"])
        kind = "disc" if m.label in DISCS else "body"
        level = m.level if m.label != SACRUM else "Sacrum"
        candidates = [(f"{level} {'disc ' if m.label in DISCS else ''}volume", "volume_mm3", codes.SCT.Volume,
                       mm3, own, None)]
        candidates += [(f"{level} {kind} height, {where}", f"height_{where}_mm", codes.DCM.Height, mm, own, modifier)
                       for where, modifier in _MODIFIER.items()]
        if m.label in DISCS:
            site = disc_level_site(m.label)
            candidates += [(f"{level} canal area", "canal_area_mm2", codes.SCT.Area, mm2, site, codes.SCT.Transverse),
                           (f"{level} canal AP diameter", "canal_ap_diameter_mm", codes.SCT.Diameter, mm, site,
                            codes.SCT.Sagittal),
                           (f"{level} cord area", "cord_area_mm2", codes.SCT.Area, mm2, site, codes.SCT.Transverse)]
        for label, field_name, name, unit, site, modifier in candidates:
            number = getattr(m, field_name)
            if number is not None:
                out.append(Value(label, field_name, round(float(number), 2), name, unit, site, modifier,
                                 m.points_mm.get(field_name, []), m.label))
    return out


def _coordinates(value: Value, volume) -> tuple[str, np.ndarray, Dataset, int | None, bool]:
    """(graphic type, (column, row) data, image, frame, drawn as a line) for ``value`` on the nearest image."""
    if len(value.points) == 2:
        line = place_on_nearest_image(volume, value.points)
        if abs(drawn_length_mm(volume, line) - value.number) <= DRAWN_TOLERANCE_MM:
            return "POLYLINE", line.coordinates, line.dataset, line.frame, True
        middle = np.mean(np.asarray(value.points, float), axis=0)
    else:
        middle = np.asarray(value.points[0], float)
    point = place_on_nearest_image(volume, [middle])
    return "POINT", point.coordinates, point.dataset, point.frame, False


def _group(value: Value, volume, seg: Dataset, segment: Dataset | None, algorithm):
    import highdicom as hd

    graphic, data, image, frame, line = _coordinates(value, volume)
    source = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=str(image.SOPClassUID), referenced_sop_instance_uid=str(image.SOPInstanceUID),
        referenced_frame_numbers=[frame] if frame is not None else None)
    measurement = hd.sr.Measurement(
        name=value.name, value=value.number, unit=value.unit,
        referenced_coordinates=[hd.sr.CoordinatesForMeasurement(graphic, np.asarray(data, float), source)])
    if line:
        tracking = hd.sr.TrackingIdentifier(uid=derived_uid("sr-length", str(seg.SOPInstanceUID), value.label),
                                            identifier=OHIF_LENGTH)
    elif value.field == "volume_mm3" and segment is not None:       # the segment's own Tracking UID: the link
        tracking = hd.sr.TrackingIdentifier(uid=str(segment.TrackingUID), identifier=OHIF_ARROW)
    else:
        tracking = hd.sr.TrackingIdentifier(uid=derived_uid("sr-value", str(seg.SOPInstanceUID), value.label),
                                            identifier=OHIF_ARROW)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        finding_type=_coded(STRUCTURES[value.structure]["type"]),
        finding_sites=[hd.sr.FindingSite(anatomic_location=value.site, topographical_modifier=value.modifier)],
        algorithm_id=algorithm,
        measurements=[measurement],
    )
    text = value.label if line else f"{value.label} {value.number:.2f} {value.unit.value}"
    group[0].ContentSequence.append(hd.sr.TextContentItem(name=codes.DCM.Comment, value=text,
                                                          relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return group


def build_measurement_sr(seg: Dataset, source_datasets: list[Dataset], levels: list[LevelMeasurements],
                         phantom: bool, volume) -> Dataset | None:
    """Comprehensive 3D SR holding every measurement of ``levels``, each drawn on an image of ``volume`` (the
    loaded source series) and tied to ``seg``; None when there is no measurement to hold (module doc)."""
    import highdicom as hd

    segments = _segments_by_label(seg)
    # a LABELMAP SEG may describe the background first, without an algorithm
    algo = next(item.SegmentationAlgorithmIdentificationSequence[0] for item in seg.SegmentSequence
                if "SegmentationAlgorithmIdentificationSequence" in item)
    algorithm = hd.sr.AlgorithmIdentification(name=str(algo.AlgorithmName), version=str(algo.AlgorithmVersion))
    groups = [_group(v, volume, seg, segments.get(v.structure), algorithm) for v in measured_values(levels)]
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
    # 64 characters at most (LO): the phantom warning and what it is, not cut mid-word
    sr.SeriesDescription = ("PHANTOM MODEL NOT FOR CLINICAL USE; Spine measurements" if phantom
                            else "Spine measurements (TotalSpineSeg)")
    sr.SoftwareVersions = __version__
    return sr

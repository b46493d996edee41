"""Coded concepts for the DICOM Segmentation (SEG) writer.

Maps each TotalSpineSeg final-output label value to the coded concepts a SEG
segment needs (Segmented Property Category / Type, optional Anatomic Region)
plus a label and a recommended display colour.

Sources (every SCT code below was checked against at least one of these):

* DICOM PS3.16, as encoded in pydicom 3.0.2 (``pydicom/sr/_concepts_dict.py``
  and ``_cid_dict.py``, installed in this project's venv):
    - CID 7150 "Segmentation Property Category": Anatomical Structure is
      SCT 91723000.
    - CID 7603 "Vertebra": a distinct concept for each of C1..L5.
    - CID 7604 "Intervertebral Disc": a distinct concept for each level from
      C2/C3 to L5/S1. These are the disc structures themselves, not the
      "Level of ... intervertebral disc" planes in CID 1003.
    - CID 7151 / 7153: Spinal cord (2748008); CID 7151: Sacrum (54735007).
    - CID 8134 "Anatomic Structure" / CID 6115: Vertebral canal (61853006).
      This concept is not a member of CID 7151, but CID 7151 is a baseline
      (extensible) group, so the code can still be used.
* The same CID 7603 / 7604 / 7150 tables as rendered in
  bvdh/dicom-terminology-in-fhir (FHIR ValueSets generated from PS3.16).
* TotalSegmentator ``resources/totalsegmentator_snomed_mapping.csv``: it uses
  the same vertebra codes (C1..L5), Sacrum 54735007 and Spinal cord 2748008.
  It has no per-level disc entries.

Category: the current PS3.16 CID 7150 gives SCT 91723000 "Anatomical Structure",
and that is the code used here. Many tools (TotalSegmentator, dcmqi and Slicer
terminology files, MONAI Label) write SCT 123037004 with the same meaning
"Anatomical Structure". 123037004 is the SCT code mapped from the retired SRT
code T-D000A; in SNOMED CT it is the top-level "Body structure" concept.
Replace ``_ANATOMICAL_STRUCTURE`` if you need to match those tools.

Spinal canal (label 2) is coded as SCT 61853006 "Vertebral canal". pydicom also
lists this code under the name "Spinal canal structure". A possible alternative
for a mask that covers CSF plus cord is CID 7153's 280401006 "Spinal
cerebrospinal fluid pathway".

Colours: vertebrae repeat a cycle of three warm tones along the whole column,
and discs repeat a cycle of three cool tones. Neighbouring levels therefore
never share a colour. The cord is yellow, the canal light blue and the sacrum
brown.
"""
from spineseg import labels as L

_ANATOMICAL_STRUCTURE = ("91723000", "SCT", "Anatomical Structure")

_VERT_RGB = ((230, 110, 40), (190, 50, 60), (245, 175, 130))
_DISC_RGB = ((0, 170, 170), (60, 90, 210), (140, 80, 200))

_SRC_VERT = ("PS3.16 CID 7603 (pydicom 3.0.2 codes); "
             "TotalSegmentator snomed mapping")
_SRC_DISC = ("PS3.16 CID 7604 (pydicom 3.0.2 codes; "
             "bvdh/dicom-terminology-in-fhir CID 7604)")

# SCT code of each vertebra and disc (values, names and order: spineseg.labels), cranial to caudal
_VERTEBRA_CODES = {
    11: "14806007", 12: "39976000", 13: "113205007", 14: "5329002", 15: "36978003", 16: "36054005",
    17: "87391001",
    21: "64864005", 22: "53733008", 23: "1626008", 24: "73071006", 25: "56401006", 26: "45296009",
    27: "62487009", 28: "11068009", 29: "82687006", 30: "7610001", 31: "12989004", 32: "23215003",
    41: "66794005", 42: "14293000", 43: "36470004", 44: "11994002", 45: "49668003",
    # L6: no SNOMED CT or PS3.16 concept names a sixth lumbar vertebra (see _LUMBOSACRAL_VARIANTS)
    46: "73903008",
}
_DISC_CODES = {
    63: "1078209008", 64: "58820006", 65: "49400002", 66: "73959003", 67: "75095006",
    71: "37414007", 72: "40908007", 73: "6004007", 74: "2620004", 75: "82965004", 76: "72692000",
    77: "74401007", 78: "28693002", 79: "9188009", 80: "113209001", 81: "34959001", 82: "1537001",
    91: "76206002", 92: "80064006", 93: "67459009", 94: "62551000", 95: "84020006", 96: "75782005",
    100: "715056000",
}

# Codes of the levels that exist only with lumbosacral transitional anatomy (TotalSpineSeg allows six
# lumbar levels).  SNOMED CT has no "sixth lumbar vertebra" and PS3.16 CID 7603/7604 stop at L5 and
# L5/S1.  The standard's way for a structure without its own concept is the closest concept that is
# true of it in the Segmented Property Type, with the exact identity in Segment Label and Tracking ID
# (PS3.3 C.8.20.2); a private "99" coding scheme was not used because no viewer, registry or PACS
# query could resolve it.
#   * L6 -> SCT 73903008 "Bone structure of lumbar vertebra" (a lumbar vertebra; as mapped in the
#     AAPM TG-263 structure list and HL7 mCODE's radiotherapy location value set).
#   * L5-L6 disc -> SCT 75782005 "Intervertebral disc structure of fifth lumbar vertebra" (pydicom 3.0.2
#     concepts; in SNOMED CT the disc "of" a vertebra is the one under it, as 84020006 "...of fourth
#     lumbar vertebra" is CID 7604's L4/L5 disc, and the L5/S1 disc has its own concept 715056000).
_LUMBOSACRAL_VARIANTS = {46: "Bone structure of lumbar vertebra",
                         96: "Intervertebral disc structure of fifth lumbar vertebra"}
_SRC_VARIANT = ("no specific SNOMED CT / PS3.16 concept; closest true concept, exact level in "
                "Segment Label and Tracking ID (spineseg/outputs/codes_table.py)")


def _entry(name: str, code: str, meaning: str, rgb: tuple[int, int, int], source: str) -> dict:
    return {"name": name, "category": _ANATOMICAL_STRUCTURE, "type": (code, "SCT", meaning), "region": None,
            "rgb": rgb, "source": source}


def _build():
    table = {
        L.CORD: _entry(L.NAMES[L.CORD], "2748008", "Spinal cord", (255, 215, 0),
                       "PS3.16 CID 7151/7153 (pydicom 3.0.2 codes); TotalSegmentator snomed mapping"),
        L.CANAL: _entry(L.NAMES[L.CANAL], "61853006", "Vertebral canal", (150, 210, 250),
                        "PS3.16 CID 8134/6115 (pydicom 3.0.2 codes.SCT.VertebralCanal); not in CID 7151"),
        L.SACRUM: _entry(L.NAMES[L.SACRUM], "54735007", "Sacrum", (150, 95, 60),
                         "PS3.16 CID 7151 (pydicom 3.0.2 codes); TotalSegmentator snomed mapping"),
    }
    for i, (label, level) in enumerate(L.VERTEBRA_LEVELS):
        table[label] = _entry(L.NAMES[label], _VERTEBRA_CODES[label],
                              _LUMBOSACRAL_VARIANTS.get(label, f"{level} vertebra"),
                              _VERT_RGB[i % 3], _SRC_VARIANT if label in _LUMBOSACRAL_VARIANTS else _SRC_VERT)
    for i, (label, upper, lower) in enumerate(L.DISC_LEVELS):
        table[label] = _entry(L.NAMES[label], _DISC_CODES[label],
                              _LUMBOSACRAL_VARIANTS.get(label, f"{upper}/{lower} disc"), _DISC_RGB[i % 3],
                              _SRC_VARIANT if label in _LUMBOSACRAL_VARIANTS else _SRC_DISC)
    return dict(sorted(table.items()))


STRUCTURES = _build()


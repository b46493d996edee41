"""Re-send an output folder's DICOM results (SEG, measurement SR, review picture) to the configured
destinations, without re-running inference.

    python -m spineseg.resend OUTPUT_FOLDER

Destinations and retry policy come from app.yaml and the SPINESEG_* variables, as for the app.
Only what the report recorded is sent: each file must be a plain file name in the output folder (no
path, no link), a regular file, a DICOM object whose SOP Class, SOP Instance UID and Series Instance
UID are the ones ``report.json`` holds; anything else (a path out of the folder, a swapped file)
sends nothing.
Updates ``report.json``'s ``delivery`` section (atomically); exit 0 when every destination took
every SEG, 5 when one did not, 3 when the folder holds no usable report or SEG, 4 on bad settings
or a folder another run holds.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import stat
import sys
from pathlib import Path

from spineseg import logsafe
from spineseg.outputs.atomic import write_json_atomic
from spineseg.delivery.send import SEG_STORAGE, deliver_all
from spineseg.errors import EXIT_BAD_INPUT, EXIT_DELIVERY, EXIT_OK, InputError, SpineSegError
from spineseg.outputs.output_folder import lock_output
from spineseg.report import REPORT_NAME
from spineseg.settings import check_known_keys, destinations_from_settings, load_settings, policy_from_settings

SEGMENTATION_CLASSES = (SEG_STORAGE, "1.2.840.10008.5.1.4.1.1.66.7")   # Segmentation, Label Map Segmentation

MAX_REPORT_BYTES = 64 * 1024 * 1024


def recorded_objects(folder: Path, report: dict) -> list[Path]:
    """The DICOM files the report names (per series its SEG, SR and review picture), each checked
    against what the report recorded of it."""
    records = []
    for e in report.get("processed", []):
        if not isinstance(e, dict):
            continue
        if isinstance(e.get("dicom_outputs"), list):
            records += [r for r in e["dicom_outputs"] if isinstance(r, dict)]
        elif "seg" in (e.get("outputs") or {}):           # reports written before SR and review pictures
            seg = e.get("seg") or {}
            records.append({"kind": "seg", "file": e["outputs"]["seg"], "sop_class_uid": seg.get("sop_class_uid"),
                            "sop_instance_uid": seg.get("sop_instance_uid"),
                            "series_instance_uid": seg.get("series_instance_uid")})
    if not any(r.get("kind") == "seg" for r in records):
        raise InputError("NO_SEG", "the report lists no SEG; nothing to send")
    return [_checked(folder, r) for r in records]


def _checked(folder: Path, record: dict) -> Path:
    import pydicom
    name = record.get("file")
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\0" in name or name != Path(name).name:
        raise InputError("SEG_MISMATCH", f"the report names {name!r} as a result file: only a file name inside the "
                         "output folder is accepted", path=str(name))
    path = folder / name
    try:
        st = os.lstat(path)
    except OSError:
        raise InputError("NO_SEG", f"{name} (named by the report) is missing from {folder}", path=str(path)) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError("SEG_MISMATCH", f"{name} is not a regular file (a link, FIFO or device); not sent",
                         path=str(path))
    try:
        with open(path, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
        found = (str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID))
    except Exception as exc:
        raise InputError("SEG_MISMATCH", f"{name} is not a readable DICOM file ({type(exc).__name__}); not sent",
                         path=str(path)) from exc
    # a report that did not record the SEG's class accepts either Segmentation class (binary/fractional, label map)
    classes = {record["sop_class_uid"]} if record.get("sop_class_uid") else set(SEGMENTATION_CLASSES)
    if found[0] not in classes or found[1:] != (record.get("sop_instance_uid"), record.get("series_instance_uid")):
        raise InputError("SEG_MISMATCH", f"{name} is not the {record.get('kind', 'DICOM').upper()} this run wrote "
                         "(SOP class, SOP Instance UID or Series Instance UID differ from report.json); it was "
                         "replaced or damaged. Re-run the app.", path=str(path))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spineseg.resend", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", type=Path)
    a = ap.parse_args(argv)
    logsafe.configure(logging.INFO)
    report_path = a.output / REPORT_NAME
    try:
        if not report_path.is_file() or report_path.stat().st_size > MAX_REPORT_BYTES:
            raise OSError("not a regular file of sane size")
        report = json.loads(report_path.read_text())
        if not isinstance(report, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        print(f"error: NO_REPORT: cannot read {report_path} ({exc}); pass a spine-seg output folder", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        with lock_output(a.output):
            return _resend(a.output, report_path, report)
    except SpineSegError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return exc.exit_code


def _resend(folder: Path, report_path: Path, report: dict) -> int:
    files = recorded_objects(folder, report)
    settings = load_settings()                # the same settings file as the app, checked as the app checks it
    check_known_keys(settings)
    destinations, policy = destinations_from_settings(settings), policy_from_settings(settings)
    delivery = deliver_all(files, destinations, policy)
    delivery["resent"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    report["delivery"] = delivery
    ok = delivery.get("configured") and all(d["status"] == "delivered" for d in delivery["destinations"])
    if (report.get("error") or {}).get("code") == "DELIVERY_FAILED" and ok:
        report.update({"status": "succeeded", "exit_code": EXIT_OK, "error": None})
    write_json_atomic(report_path, report)
    if not delivery.get("configured"):
        print("error: no destination configured (SPINESEG_STOW_URL or SPINESEG_CSTORE_HOST)", file=sys.stderr)
        return EXIT_DELIVERY
    return EXIT_OK if ok else EXIT_DELIVERY


if __name__ == "__main__":
    raise SystemExit(main())

"""Re-send an output folder's SEG files to the configured destinations, without re-running inference.

    python -m spineseg.resend OUTPUT_FOLDER

Destinations and retry policy come from app.yaml and the SPINESEG_* variables, as for the app.
Updates ``report.json``'s ``delivery`` section (atomically); exit 0 when every destination took
every SEG, 5 when one did not, 3 when the folder holds no usable report.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path

from .atomic import write_json_atomic
from .delivery import deliver_all, destinations_from_settings, policy_from_settings
from .errors import EXIT_BAD_INPUT, EXIT_DELIVERY, EXIT_OK
from .pipeline import load_settings
from .report import REPORT_NAME


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spineseg.resend", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", type=Path)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")
    report_path = a.output / REPORT_NAME
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as exc:
        print(f"error: NO_REPORT: cannot read {report_path} ({exc}); pass a spine-seg output folder", file=sys.stderr)
        return EXIT_BAD_INPUT
    files = [a.output / e["outputs"]["seg"] for e in report.get("processed", []) if "seg" in e.get("outputs", {})]
    missing = [f for f in files if not f.is_file()]
    if not files or missing:
        print(f"error: NO_SEG: {'missing ' + str(missing[0]) if missing else 'the report lists no SEG'}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    settings = load_settings()                # the same settings file as the app
    delivery = deliver_all(files, destinations_from_settings(settings), policy_from_settings(settings))
    delivery["resent"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    report["delivery"] = delivery
    ok = delivery.get("configured") and all(d["status"] == "delivered" for d in delivery["destinations"])
    if report.get("error", {}) and report["error"].get("code") == "DELIVERY_FAILED" and ok:
        report.update({"status": "succeeded", "exit_code": EXIT_OK, "error": None})
    write_json_atomic(report_path, report)
    if not delivery.get("configured"):
        print("error: no destination configured (SPINESEG_STOW_URL or SPINESEG_CSTORE_HOST)", file=sys.stderr)
        return EXIT_DELIVERY
    return EXIT_OK if ok else EXIT_DELIVERY


if __name__ == "__main__":
    raise SystemExit(main())

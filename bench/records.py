"""What every bench record starts and ends with: when, at which commit and on what machine it was measured
(tools/docs_figures.py quotes it beside each figure), and the record printed and written."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_record(bench: str) -> dict:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"bench": bench, "recorded": {"date": date.today().isoformat(), "commit": commit,
                                         "machine": f"{platform.machine()}, {os.cpu_count()} cores"},
            "load_average_at_start": round(os.getloadavg()[0], 1)}


def finish_record(record: dict, path: Path | None) -> int:
    """Print the record, write it to ``path`` when given; the bench's exit status."""
    record["load_average_at_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(record, indent=1))
    if path:
        path.write_text(json.dumps(record, indent=1) + "\n")
    return 0

#!/bin/sh
# mercure module entry point: mercure mounts the series at $MERCURE_IN_DIR (with its task.json, which
# spine-seg skips as non-DICOM) and collects results from $MERCURE_OUT_DIR. Exit status: see README.
set -eu
exec python3 /opt/holoscan/app -i "${MERCURE_IN_DIR:-/tmp/data}" -o "${MERCURE_OUT_DIR:-/tmp/output}"

"""Stage 1, input: scan a study's DICOM headers, read pixels within bounds, choose the series, find partners."""

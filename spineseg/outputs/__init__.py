"""Stage 3, outputs: DICOM SEG, measurements (SR), review picture (Secondary Capture), atomic files, the output folder."""

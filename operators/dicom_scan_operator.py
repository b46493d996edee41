"""Scans the input folder for DICOM (headers only) and emits the series found."""
from monai.deploy.core import OperatorSpec

from spineseg.pipeline import scan_study

from .base import SpineSegOperator


class DICOMScanOperator(SpineSegOperator):
    """Output ``scan``: :class:`spineseg.input.dicom_input.ScanResult` (no pixel data)."""

    def setup(self, spec: OperatorSpec):
        spec.output("scan")

    def compute(self, op_input, op_output, context):
        op_output.emit(scan_study(self.config, self.report), "scan")

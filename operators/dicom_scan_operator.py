"""Scans the input folder for DICOM (headers only) and emits the series found."""
from monai.deploy.core import Fragment, Operator, OperatorSpec

from spineseg.pipeline import AppConfig, scan_study
from spineseg.report import RunReport


class DICOMScanOperator(Operator):
    """Output ``scan``: :class:`spineseg.dicom_input.ScanResult` (no pixel data)."""

    def __init__(self, fragment: Fragment, *args, config: AppConfig, report: RunReport, **kwargs):
        self.config, self.report = config, report
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.output("scan")

    def compute(self, op_input, op_output, context):
        op_output.emit(scan_study(self.config, self.report), "scan")

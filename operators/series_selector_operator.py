"""Chooses the spine series to process and records why the others were not."""
from monai.deploy.core import Fragment, Operator, OperatorSpec

from spineseg.pipeline import AppConfig, choose_series
from spineseg.report import RunReport


class SpineSeriesSelectorOperator(Operator):
    """Input ``scan``; output ``series``: list of :class:`spineseg.dicom_input.SeriesInfo`."""

    def __init__(self, fragment: Fragment, *args, config: AppConfig, report: RunReport, **kwargs):
        self.config, self.report = config, report
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("scan")
        spec.output("series")

    def compute(self, op_input, op_output, context):
        scan = op_input.receive("scan")
        op_output.emit(choose_series(scan, self.config, self.report), "series")

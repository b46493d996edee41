"""Chooses the spine series to process and records why the others were not."""
from monai.deploy.core import OperatorSpec

from spineseg.pipeline import choose_series

from .base import SpineSegOperator


class SpineSeriesSelectorOperator(SpineSegOperator):
    """Input ``scan``; output ``series``: (chosen series, every series of the study), both lists of
    :class:`spineseg.input.dicom_input.SeriesInfo` (the study lets a series without a landmark be labelled with
    a partner series)."""

    def setup(self, spec: OperatorSpec):
        spec.input("scan")
        spec.output("series")

    def compute(self, op_input, op_output, context):
        scan = op_input.receive("scan")
        op_output.emit((choose_series(scan, self.config, self.report), scan.series), "series")

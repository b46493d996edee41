"""Writes each processed series' outputs (SEG, label map, measurements, review picture), atomically."""
from monai.deploy.core import OperatorSpec

from spineseg.pipeline import write_study

from .base import SpineSegOperator


class SpineSEGWriterOperator(SpineSegOperator):
    """Input ``results``; output ``written``: the report entries of the series written
    (``spineseg.pipeline.write_study``)."""

    def setup(self, spec: OperatorSpec):
        spec.input("results")
        spec.output("written")

    def compute(self, op_input, op_output, context):
        segmented, models = op_input.receive("results")
        op_output.emit(write_study(segmented, models, self.config, self.report), "written")

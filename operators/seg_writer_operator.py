"""Writes one DICOM SEG and one NIfTI label map per processed series (atomically)."""
from monai.deploy.core import OperatorSpec

from spineseg.pipeline import output_stem, write_results

from .base import SpineSegOperator


class SpineSEGWriterOperator(SpineSegOperator):
    """Input ``results``; output ``written``: the report entries of the series written."""

    def setup(self, spec: OperatorSpec):
        spec.input("results")
        spec.output("written")

    def compute(self, op_input, op_output, context):
        taken: set[str] = set()
        for volume, result, models in op_input.receive("results"):
            entry = write_results(volume, result, models, self.config, self.report, output_stem(volume, taken))
            self.report.processed.append(entry)
        op_output.emit(self.report.processed, "written")

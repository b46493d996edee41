"""Writes one DICOM SEG and one NIfTI label map per processed series (atomically)."""
from monai.deploy.core import Fragment, Operator, OperatorSpec

from spineseg.pipeline import AppConfig, output_stem, write_results
from spineseg.report import RunReport


class SpineSEGWriterOperator(Operator):
    """Input ``results``; output ``written``: the report entries of the series written."""

    def __init__(self, fragment: Fragment, *args, config: AppConfig, report: RunReport, **kwargs):
        self.config, self.report = config, report
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("results")
        spec.output("written")

    def compute(self, op_input, op_output, context):
        taken: set[str] = set()
        for volume, result, models in op_input.receive("results"):
            entry = write_results(volume, result, models, self.config, self.report, output_stem(volume, taken))
            self.report.processed.append(entry)
        op_output.emit(self.report.processed, "written")

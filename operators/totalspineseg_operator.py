"""Loads each chosen series' pixels and runs TotalSpineSeg on it, in process."""
from monai.deploy.core import OperatorSpec

from spineseg.pipeline import get_models, segment_study

from .base import SpineSegOperator


class TotalSpineSegOperator(SpineSegOperator):
    """Input ``series``: (chosen, study) from the selector; output ``results``: (list of (Volume,
    SegmentationResult), models), as ``spineseg.pipeline.segment_study`` returns them.

    The models load on the first compute and stay loaded for the life of the process.
    """

    def setup(self, spec: OperatorSpec):
        spec.input("series")
        spec.output("results")

    def compute(self, op_input, op_output, context):
        chosen, study = op_input.receive("series")
        models = get_models(self.config, self.report)
        op_output.emit((segment_study(chosen, study, models, self.config, self.report), models), "results")

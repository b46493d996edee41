"""Loads each chosen series' pixels and runs TotalSpineSeg on it, in process."""
from monai.deploy.core import Fragment, Operator, OperatorSpec

from spineseg.pipeline import AppConfig, get_models, load_series, segment
from spineseg.report import RunReport


class TotalSpineSegOperator(Operator):
    """Input ``series``; output ``results``: list of (Volume, SegmentationResult).

    The models load on the first compute and stay loaded for the life of the process.
    """

    def __init__(self, fragment: Fragment, *args, config: AppConfig, report: RunReport, **kwargs):
        self.config, self.report = config, report
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("series")
        spec.output("results")

    def compute(self, op_input, op_output, context):
        chosen = op_input.receive("series")
        models = get_models(self.config, self.report)
        results = []
        for series in chosen:
            volume = load_series(series, self.config, self.report)
            results.append((volume, segment(volume, models, self.report), models))
        op_output.emit(results, "results")

"""Loads each chosen series' pixels and runs TotalSpineSeg on it, in process."""
from monai.deploy.core import OperatorSpec

from spineseg.pipeline import check_station_agreement, get_models, load_series, segment_series

from .base import SpineSegOperator


class TotalSpineSegOperator(SpineSegOperator):
    """Input ``series``: (chosen, study) from the selector; output ``results``: list of (Volume,
    SegmentationResult, models).

    The models load on the first compute and stay loaded for the life of the process.
    """

    def setup(self, spec: OperatorSpec):
        spec.input("series")
        spec.output("results")

    def compute(self, op_input, op_output, context):
        chosen, study = op_input.receive("series")
        models = get_models(self.config, self.report)
        segmented, done = [], {}
        for series in chosen:
            volume = load_series(series, self.config, self.report)
            segmented.append((volume, segment_series(volume, study, models, self.config, self.report, done)))
        check_station_agreement(segmented)      # stations that disagree where they overlap are flagged
        results = [(v, r, models) for v, r in segmented]
        op_output.emit(results, "results")

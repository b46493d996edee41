"""Sends the written SEGs to the configured STOW-RS / C-STORE destinations (none: records that)."""
from monai.deploy.core import Fragment, Operator, OperatorSpec

from spineseg.pipeline import AppConfig, deliver_results
from spineseg.report import RunReport


class DeliveryOperator(Operator):
    """Input ``written``; output ``delivered`` (the same entries, after delivery)."""

    def __init__(self, fragment: Fragment, *args, config: AppConfig, report: RunReport, **kwargs):
        self.config, self.report = config, report
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("written")
        spec.output("delivered")

    def compute(self, op_input, op_output, context):
        written = op_input.receive("written")
        deliver_results(self.config, self.report)     # raises DeliveryError (exit 5) when not delivered
        op_output.emit(written, "delivered")

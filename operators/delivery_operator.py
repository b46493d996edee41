"""Sends the written SEGs to the configured destinations (none configured: records that)."""
from monai.deploy.core import Fragment, Operator, OperatorSpec

from spineseg.pipeline import AppConfig
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
        # STOW-RS / C-STORE senders plug in here (issue 6); until one is configured the report's
        # "delivery" section says that nothing was sent.
        op_output.emit(op_input.receive("written"), "delivered")

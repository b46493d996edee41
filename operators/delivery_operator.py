"""Sends the written DICOM objects to the configured STOW-RS / C-STORE destinations (none: records that)."""
from monai.deploy.core import OperatorSpec

from spineseg.pipeline import deliver_results

from .base import SpineSegOperator


class DeliveryOperator(SpineSegOperator):
    """Input ``written``; output ``delivered`` (the same entries, after delivery)."""

    def setup(self, spec: OperatorSpec):
        spec.input("written")
        spec.output("delivered")

    def compute(self, op_input, op_output, context):
        written = op_input.receive("written")
        deliver_results(written, self.config, self.report)   # DeliveryError (exit 5) when not delivered
        op_output.emit(written, "delivered")

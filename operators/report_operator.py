"""Last operator of the graph: logs the summary of a successful run."""
import logging

from monai.deploy.core import Fragment, Operator, OperatorSpec

from spineseg.report import RunReport

log = logging.getLogger("spineseg")


class ReportOperator(Operator):
    """Input ``delivered``. ``report.json`` itself is written by the runner, success or failure."""

    def __init__(self, fragment: Fragment, *args, report: RunReport, **kwargs):
        self.report = report
        self.completed = False
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("delivered")

    def compute(self, op_input, op_output, context):
        entries = op_input.receive("delivered")
        for e in entries:
            log.info("series %s: %d structures, outputs %s", e["series_number"], len(e["structures"]),
                     ", ".join(e.get("outputs", {}).values()))
        self.completed = True

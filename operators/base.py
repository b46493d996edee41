"""Common constructor of spine-seg operators: each holds the run's config and report."""
from monai.deploy.core import Fragment, Operator

from spineseg.pipeline import AppConfig
from spineseg.report import RunReport


class SpineSegOperator(Operator):
    """An operator that reads ``self.config`` and records into ``self.report``."""

    def __init__(self, fragment: Fragment, *args, config: AppConfig, report: RunReport, **kwargs):
        # attributes first: Operator.__init__ calls setup()
        self.config, self.report = config, report
        super().__init__(fragment, *args, **kwargs)

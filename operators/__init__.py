"""Holoscan/MONAI Deploy operators of spine-seg: thin adapters over ``spineseg`` functions.

Each operator receives the run's :class:`~spineseg.pipeline.AppConfig` and
:class:`~spineseg.report.RunReport` at construction and passes plain Python objects downstream.
"""
from .dicom_scan_operator import DICOMScanOperator
from .series_selector_operator import SpineSeriesSelectorOperator
from .totalspineseg_operator import TotalSpineSegOperator
from .seg_writer_operator import SpineSEGWriterOperator
from .delivery_operator import DeliveryOperator
from .report_operator import ReportOperator

__all__ = ["DICOMScanOperator", "SpineSeriesSelectorOperator", "TotalSpineSegOperator",
           "SpineSEGWriterOperator", "DeliveryOperator", "ReportOperator"]

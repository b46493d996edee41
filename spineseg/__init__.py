"""spine-seg core: plain, typed functions behind the MONAI Deploy operators.

Nothing in this package imports Holoscan, so every function is testable on its own.
"""
__version__ = "0.1.0"
APP_NAME = "spine-seg"

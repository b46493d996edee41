"""Benchmarks: a package of the checkout, not installed. Run each from the repository root as a module,
``python -m bench.NAME [options]``; they import the dev modules by package (``from tools import phantom``,
``from bench.agreement import agreement``, ``from tests.helpers import fake_model_description``) and spineseg as
installed (``make venv``). Their records are in ``bench/results/`` (``tools/docs_figures.py`` quotes them).
"""

"""The repository's development tools (phantoms, model training, weights, images, docs figures): a package of the
checkout, not installed. A module here that imports another dev module names it by package (``from tools import
phantom``), so it resolves the same way from every entry point that has the repository root on ``sys.path``:
``python -m tools.NAME`` run from the root, ``python -m bench.NAME`` (the benches), and the tests. The tools
that import no other dev module also run by path (``python tools/install_weights.py``, ``python tools/phantom.py``).
"""

"""Stage 2, inference: TotalSpineSeg's two steps in process, the labels they can emit, and the numbering's provenance."""

"""The scan pipeline: model → graph → tap → augment → probe → run → similarity → MSRS → result.

prune, nas, history, report and the service build on this package; it imports none of them.
"""

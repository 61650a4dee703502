"""``redaudit serve``: the auditing service — an HTTP API over the library, scan jobs on workers.

Layout follows the data: ``uploads`` validate and store bytes (``storage``), ``jobs`` holds job
state in the history database, ``runner`` turns a job into a scan/prune/check through the
library, ``workers`` (embedded threads) or ``celery_app`` (scale-out) execute jobs, ``api``
routes HTTP to those. Nothing here is imported by the library.
"""

"""The one home of redaudit's version: the package re-exports it as ``redaudit.__version__`` and
pyproject.toml reads it from here (``[tool.setuptools.dynamic]``), so a release changes one line."""

__version__ = "0.2.0"

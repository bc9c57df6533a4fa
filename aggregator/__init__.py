"""aggregator: watch evolving news stories and keep every version.

The pipeline, one package per stage::

    config -> scheduler -> fetch -> parse -> normalize -> detect -> store -> notify / digest

with ``cli`` on top.
"""

__version__ = "0.1.0"

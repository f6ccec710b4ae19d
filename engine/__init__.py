"""Face-swap studio engine: extract faces, train an intracoder, swap, measure.

A library with no UI code: the CLI (`python -m engine`) and the web app both call into it.
"""

__version__ = "0.1.0"

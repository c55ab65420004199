"""sleepcycle: LLMs that learn continually by sleeping.

The core (this package outside `store/`) imports no orchestration, tracking, storage or UI library; it
reads and writes local directories and returns manifests. See README.md for the tour.
"""

__version__ = "0.1.0"

"""Make the shared helpers (``export_testing``) importable in every pytest import mode.

Converter subprocesses inherit ``sys.path``, so custom layers defined there load in them too.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

"""Facts about the running Keras backend that change how a wrapper should step.

Wrappers are written with ``keras.ops`` so they trace on TensorFlow and JAX; on PyTorch they run
eagerly, one op at a time, and work that a traced graph would prune away is paid on every step.
"""

from __future__ import annotations

import keras


def branches_on_host() -> bool:
    """True where ``keras.ops.cond`` picks its branch in Python (PyTorch, outside ``torch.compile``).

    There a wrapper may read a condition on the host and skip a no-op branch outright (no copy,
    no dispatch), which a traced backend would have to carry as a ``cond`` in its graph.
    """
    if keras.backend.backend() != "torch":
        return False
    import torch

    return not torch.compiler.is_compiling()

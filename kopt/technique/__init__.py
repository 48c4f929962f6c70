"""What every technique shares, one level above the graph: the wrapper protocol, ``strip`` and coverage.

:mod:`~kopt.technique.wrapper` (``KoptWrapper``, the protocol pruning, clustering and QAT wrappers
implement), :mod:`~kopt.technique.strip` (remove every wrapper, keeping the deployed weights),
:mod:`~kopt.technique.coverage` (warn loudly when a technique reaches less of a model than asked) and
:mod:`~kopt.technique.inplace` (wrappers put inside composite blocks kopt keeps whole).
"""

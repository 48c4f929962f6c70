"""Errors raised by :mod:`kopt.clustering` (subclasses of the built-in types users catch anyway)."""

from kopt.core.errors import KoptError


class ClusteringConfigError(KoptError, ValueError):
    """A clustering parameter is out of range or unknown (names the layer, argument and value)."""


class NotClusterableError(KoptError, TypeError):
    """The layer has no weights kopt knows how to cluster."""

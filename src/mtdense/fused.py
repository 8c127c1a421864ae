"""The fused CPU path's former home: it lives in :mod:`mtdense.deploy.fused`; these names stay importable here."""

from mtdense.deploy.fused import SOURCE, FusedNet, FusedUnavailable, build_library, fused_available

__all__ = ["FusedNet", "FusedUnavailable", "SOURCE", "build_library", "fused_available"]

"""Exports of trained stablernn networks to other formats: NIR (:func:`export_nir`)."""
from .nir import export_nir

__all__ = ["export_nir"]

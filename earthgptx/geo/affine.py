"""Affine maps (``affine.Affine``, rasterio's) applied to shapely geometries, and to and from the events'
``AffineTransform`` message."""

from __future__ import annotations

import shapely.affinity
from affine import Affine
from shapely.geometry.base import BaseGeometry

from earthgptx.v1.events_pb2 import AffineTransform

__all__ = ["affine_from_message", "affine_to_message", "apply_affine"]


def apply_affine(transform: Affine, geometry: BaseGeometry) -> BaseGeometry:
    """``geometry`` mapped through ``transform`` (e.g. pixel -> CRS coordinates)."""
    a, b, c, d, e, f = tuple(transform)[:6]
    # shapely orders the coefficients [a, b, d, e, xoff, yoff]; Affine orders them a, b, c (xoff), d, e, f.
    return shapely.affinity.affine_transform(geometry, [a, b, d, e, c, f])


def affine_from_message(message: AffineTransform) -> Affine:
    return Affine(message.a, message.b, message.c, message.d, message.e, message.f)


def affine_to_message(transform: Affine) -> AffineTransform:
    a, b, c, d, e, f = tuple(transform)[:6]
    return AffineTransform(a=a, b=b, c=c, d=d, e=e, f=f)

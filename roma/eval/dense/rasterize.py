"""GeoJSON building footprints -> binary masks over a georeferenced tile (SpaceNet v1).

    gt = geotransform_from_tiff(Path("3band_AOI_1_RIO_img1.tif"))   # GDAL order (x0, dx, 0, y0, 0, dy)
    mask = rasterize_geojson(Path("Geo_AOI_1_RIO_img1.geojson"), gt, shape=(406, 438))  # (H, W) uint8

Assumptions (documented because SpaceNet ships no masks for v1):
- the GeoJSON coordinates are in the CRS of the tile's geotransform (SpaceNet v1: both WGS84
  lon/lat); no reprojection is done, and a third (z) coordinate is ignored;
- the geotransform has no rotation / shear terms (north-up tiles); one with them is an error;
- GeoTIFF "PixelIsArea" (the default): the tie point is the outer corner of pixel (0, 0). For
  "PixelIsPoint" tiles the tie point is a pixel centre and is shifted by half a pixel;
- a pixel belongs to a footprint when its *centre* lies inside the polygon (even-odd rule, so
  holes of interior rings are cut out). This keeps areas exact: a polygon covering 4 x 4 pixel
  squares marks 16 pixels. A centre exactly on an edge is assigned by the half-open crossing rule,
  so two footprints sharing an edge never both claim a pixel and together miss none. PIL's ImageDraw.polygon was not used because it rounds vertices to
  integers and fills boundary pixels (the same square gives 25 pixels), which inflates the small
  buildings that dominate SpaceNet;
- Polygon and MultiPolygon geometries are drawn; null geometries are skipped; other types are an error.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PIXEL_IS_POINT = 2  # GTRasterTypeGeoKey (1025) value


def geotransform_from_tiff(path: Path) -> tuple[float, float, float, float, float, float]:
    """GDAL-style geotransform from the GeoTIFF tags (ModelTransformation, or tie point + pixel scale)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        point = False
        if "GeoKeyDirectoryTag" in tags:  # header (4 values) then (key, location, count, value) entries
            keys = np.asarray(tags["GeoKeyDirectoryTag"].value).reshape(-1, 4)[1:]
            point = any(int(k[0]) == 1025 and int(k[3]) == PIXEL_IS_POINT for k in keys)
        if "ModelTransformationTag" in tags:
            m = [float(v) for v in tags["ModelTransformationTag"].value]
            gt = (m[3], m[0], m[1], m[7], m[4], m[5])
        elif "ModelPixelScaleTag" in tags and "ModelTiepointTag" in tags:
            sx, sy = (float(v) for v in tags["ModelPixelScaleTag"].value[:2])
            i, j, _, x, y, _ = (float(v) for v in tags["ModelTiepointTag"].value[:6])
            gt = (x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy)
        else:
            raise ValueError(f"{path} has no GeoTIFF georeferencing tags (ModelTransformation / ModelTiepoint)")
    if point:
        gt = (gt[0] - gt[1] / 2, gt[1], gt[2], gt[3] - gt[5] / 2, gt[4], gt[5])
    return gt


def world_to_pixel(xy: np.ndarray, gt) -> np.ndarray:
    """(N, 2) world x, y -> (N, 2) continuous pixel col, row (0, 0 = the outer corner of pixel 0)."""
    x0, dx, rx, y0, ry, dy = gt
    if rx != 0 or ry != 0:
        raise ValueError(f"geotransform {gt} is rotated or sheared; only north-up tiles are supported")
    if dx == 0 or dy == 0:
        raise ValueError(f"geotransform {gt} has a zero pixel size")
    xy = np.asarray(xy, dtype=np.float64)
    return np.stack([(xy[:, 0] - x0) / dx, (xy[:, 1] - y0) / dy], 1)


def ring_mask(ring: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, 2) pixel-space ring (col, row) -> (H, W) bool: pixel centres inside (even-odd crossings)."""
    h, w = shape
    out = np.zeros(shape, dtype=bool)
    if len(ring) < 3:
        return out
    r0, r1 = max(int(np.floor(ring[:, 1].min())), 0), min(int(np.ceil(ring[:, 1].max())), h)
    c0, c1 = max(int(np.floor(ring[:, 0].min())), 0), min(int(np.ceil(ring[:, 0].max())), w)
    if r0 >= r1 or c0 >= c1:
        return out
    a, b = ring, np.roll(ring, -1, axis=0)  # edges a -> b (closing edge included)
    yc = np.arange(r0, r1) + 0.5  # (R,) row centres
    xc = np.arange(c0, c1) + 0.5  # (C,) column centres
    # an edge crosses the horizontal line y when exactly one end is above it (half-open rule)
    crosses = (a[None, :, 1] > yc[:, None]) != (b[None, :, 1] > yc[:, None])  # (R, E)
    dy = b[:, 1] - a[:, 1]
    t = (yc[:, None] - a[None, :, 1]) / np.where(dy == 0, 1.0, dy)[None]  # horizontal edges never cross
    x_cross = np.where(crosses, a[None, :, 0] + t * (b[None, :, 0] - a[None, :, 0]), np.inf)  # (R, E)
    n_left = (x_cross[:, None, :] < xc[None, :, None]).sum(-1)  # (R, C) crossings left of each centre
    out[r0:r1, c0:c1] = n_left % 2 == 1
    return out


def _polygons(geom: dict, source: str) -> list[list]:
    kind = geom.get("type")
    if kind == "Polygon":
        return [geom["coordinates"]]
    if kind == "MultiPolygon":
        return list(geom["coordinates"])
    raise ValueError(f"{source}: unsupported geometry type {kind!r} (Polygon / MultiPolygon only)")


def rasterize_features(features: list[dict], gt, shape: tuple[int, int], source: str = "geojson") -> np.ndarray:
    """GeoJSON features -> (H, W) uint8 mask (1 = inside any footprint)."""
    mask = np.zeros(shape, dtype=bool)
    for feat in features:
        geom = feat.get("geometry")
        if not geom:
            continue
        for poly in _polygons(geom, source):
            inside = np.zeros(shape, dtype=bool)
            for ring in poly:  # exterior + holes, XOR = even-odd over all rings
                pts = np.asarray(ring, dtype=np.float64)
                if pts.ndim != 2 or pts.shape[1] < 2:
                    raise ValueError(f"{source}: a polygon ring is not a list of [x, y] points")
                inside ^= ring_mask(world_to_pixel(pts[:, :2], gt), shape)
            mask |= inside
    return mask.astype(np.uint8)


def rasterize_geojson(path_or_obj: Path | dict, gt, shape: tuple[int, int]) -> np.ndarray:
    if isinstance(path_or_obj, dict):
        obj, source = path_or_obj, "geojson"
    else:
        source = str(path_or_obj)
        with open(path_or_obj) as f:
            obj = json.load(f)
    if obj.get("type") == "FeatureCollection":
        feats = obj.get("features") or []
    elif obj.get("type") == "Feature":
        feats = [obj]
    else:
        raise ValueError(f"{source}: expected a GeoJSON FeatureCollection or Feature, got type {obj.get('type')!r}")
    return rasterize_features(feats, gt, shape, source)

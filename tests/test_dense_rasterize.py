"""SpaceNet rasteriser on hand-made GeoJSON, geotransforms from GeoTIFF tags, and the SpaceNet loader."""
import json

import numpy as np
import pytest
import tifffile

from roma.eval.dense.data import load_splits
from roma.eval.dense.rasterize import geotransform_from_tiff, rasterize_geojson, ring_mask

# a north-up tile: 1e-5 degrees per pixel, top-left corner at lon -43.0, lat -22.9
GT = (-43.0, 1e-5, 0.0, -22.9, 0.0, -1e-5)


def lonlat(col, row):
    return [GT[0] + col * GT[1], GT[3] + row * GT[5], 0.0]  # z ignored, as in SpaceNet files


def square(c0, r0, c1, r1):
    return [lonlat(c0, r0), lonlat(c1, r0), lonlat(c1, r1), lonlat(c0, r1), lonlat(c0, r0)]


def fc(*geoms):
    return {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": g}
                                                      for g in geoms]}


def test_square_polygon_exact_pixel_count():
    mask = rasterize_geojson(fc({"type": "Polygon", "coordinates": [square(2, 3, 6, 7)]}), GT, (12, 10))
    assert mask.dtype == np.uint8 and mask.shape == (12, 10)
    assert mask.sum() == 16
    assert mask[3:7, 2:6].all()  # rows 3..6, cols 2..5


def test_hole_multipolygon_clipping_and_null_geometry():
    outer, hole = square(0, 0, 6, 6), square(2, 2, 4, 4)
    geoms = [{"type": "Polygon", "coordinates": [outer, hole]},  # 36 - 4
             {"type": "MultiPolygon", "coordinates": [[square(8, 0, 10, 1)], [square(8, 8, 12, 12)]]},
             None]
    mask = rasterize_geojson(fc(*geoms), GT, (10, 10))
    assert mask[:6, :6].sum() == 32 and not mask[2:4, 2:4].any()
    assert mask[0, 8:10].all()
    assert mask[8:, 8:].sum() == 4  # the second square is clipped to the tile


def test_triangle_uses_pixel_centres():
    # right triangle with legs of 4.5 px: pixel centres (c + .5, r + .5) inside when c + r <= 3 -> 10,
    # while its area is 10.125 and PIL's vertex rounding would give more
    tri = np.array([[0, 0], [4.5, 0], [0, 4.5]], dtype=float)
    mask = ring_mask(tri, (6, 6))
    assert mask.sum() == 10
    assert all(mask[r, c] == (r + c <= 3) for r in range(6) for c in range(6))


def test_shared_edge_through_pixel_centres_assigns_each_pixel_once():
    left = np.array([[0, 0], [2.5, 0], [2.5, 2], [0, 2]], dtype=float)  # the shared edge x = 2.5 runs
    right = np.array([[2.5, 0], [5, 0], [5, 2], [2.5, 2]], dtype=float)  # through the centres of column 2
    a, b = ring_mask(left, (2, 5)), ring_mask(right, (2, 5))
    assert not (a & b).any() and (a | b).all()


def test_bad_geometry_raises():
    with pytest.raises(ValueError, match="unsupported geometry"):
        rasterize_geojson(fc({"type": "Point", "coordinates": lonlat(1, 1)}), GT, (4, 4))
    with pytest.raises(ValueError, match="rotated"):
        rasterize_geojson(fc({"type": "Polygon", "coordinates": [square(0, 0, 2, 2)]}), (0, 1, 0.1, 0, 0, -1), (4, 4))


def write_tile(path, img, gt=GT, point=False):
    x0, dx, _, y0, _, dy = gt
    geokeys = [1, 1, 0, 1, 1025, 0, 1, 2 if point else 1]
    tifffile.imwrite(path, img, photometric="rgb", extratags=[
        (33550, "d", 3, (dx, -dy, 0.0), True), (33922, "d", 6, (0.0, 0.0, 0.0, x0, y0, 0.0), True),
        (34735, "H", len(geokeys), geokeys, True)])


def test_geotransform_from_tiff_area_and_point(tmp_path):
    write_tile(tmp_path / "a.tif", np.zeros((4, 4, 3), np.uint8))
    assert geotransform_from_tiff(tmp_path / "a.tif") == pytest.approx(GT)
    write_tile(tmp_path / "p.tif", np.zeros((4, 4, 3), np.uint8), point=True)
    gt = geotransform_from_tiff(tmp_path / "p.tif")  # tie point at a pixel centre: corner half a pixel out
    assert gt[0] == pytest.approx(GT[0] - GT[1] / 2) and gt[3] == pytest.approx(GT[3] - GT[5] / 2)


def test_spacenet_loader(tmp_path):
    (tmp_path / "3band").mkdir()
    (tmp_path / "geojson").mkdir()
    rng = np.random.default_rng(0)
    for k in range(1, 11):
        write_tile(tmp_path / "3band" / f"3band_AOI_1_RIO_img{k}.tif", rng.integers(0, 255, (20, 24, 3), np.uint8))
        geo = fc({"type": "Polygon", "coordinates": [square(1, 1, 1 + k, 3)]})
        (tmp_path / "geojson" / f"Geo_AOI_1_RIO_img{k}.geojson").write_text(json.dumps(geo))
    splits = load_splits("spacenet", tmp_path, val_fraction=0.2, test_fraction=0.2, split_seed=0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    names = sorted(sc.name for v in splits.values() for sc in v)
    assert names == sorted(f"img{k}" for k in range(1, 11))
    again = load_splits("spacenet", tmp_path, val_fraction=0.2, test_fraction=0.2, split_seed=0)
    assert {s: [sc.name for sc in v] for s, v in again.items()} == {s: [sc.name for sc in v] for s, v in splits.items()}
    scene = next(sc for v in splits.values() for sc in v if sc.name == "img3")
    img, mask = scene.load()
    assert img.shape == (20, 24, 3) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    assert mask.sum() == 3 * 2
    (tmp_path / "geojson" / "Geo_AOI_1_RIO_img4.geojson").unlink()
    with pytest.raises(FileNotFoundError, match="lacks footprints"):
        load_splits("spacenet", tmp_path)

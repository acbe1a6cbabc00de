"""Data loading on real AID images and on files the tests write."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from satsweep.config import load_run_config
from satsweep.data import load_dataset
from satsweep.data.download import ensure_dataset
from satsweep.data.images import decode
from satsweep.errors import UserError
from satsweep.files import atomic_file
from satsweep.schema import DownloadConfig


def _load(overrides: list[str], cache: Path):
    cfg = load_run_config(overrides)
    return load_dataset(cfg.data, cache)


def test_aid_subset_is_split_stratified(outputs, tmp_path) -> None:
    data = _load(
        ["data.image_size=16", "data.max_per_class=20", "data.classes=[Beach,Forest,Port]"],
        tmp_path,
    )
    assert data.class_names == ("Beach", "Forest", "Port")
    assert len(data.train) + len(data.val) + len(data.test) == 60
    assert data.train.images.shape[1:] == (16, 16, 3) and data.train.images.dtype == np.uint8
    for split in data.splits().values():
        assert set(split.labels.tolist()) == {0, 1, 2}
    assert not set(data.train.sources) & set(data.test.sources)


def test_binary_task_keeps_negative_ratio(outputs, tmp_path) -> None:
    data = _load(["+experiment=aid_port_binary", "data.image_size=16"], tmp_path)
    labels = np.concatenate([s.labels for s in data.splits().values()])
    assert data.class_names == ("other", "Port")
    assert (labels == 1).sum() == 380  # every Port image
    assert (labels == 0).sum() == 3 * 380


def test_second_load_reads_the_cache_not_the_images(outputs, tmp_path, caplog) -> None:
    overrides = ["data.image_size=16", "data.max_per_class=10", "data.classes=[Beach,Port]"]
    caplog.set_level(logging.INFO, logger="satsweep")
    first = _load(overrides, tmp_path)
    second = _load(overrides, tmp_path)
    assert not first.from_cache and second.from_cache
    assert "decoded 20 images" in caplog.text and "loaded 20 images from cache" in caplog.text
    np.testing.assert_array_equal(first.train.images, second.train.images)
    assert first.digest == second.digest


def test_digest_changes_when_one_image_changes(outputs, aid_subset, tmp_path) -> None:
    overrides = ["data=folder", f"data.path={aid_subset}", "data.image_size=16"]
    before = _load(overrides, tmp_path).digest
    victim = next((aid_subset / "Port").glob("*.jpg"))
    Image.open(victim).rotate(90).save(victim)
    after = _load(overrides, tmp_path)
    assert after.digest != before and not after.from_cache


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "1"])
def test_any_image_mode_becomes_rgb_uint8(tmp_path, mode) -> None:
    source = Image.new("RGB", (40, 30), (200, 100, 50))
    image = (
        source.convert(mode)
        if mode != "I;16"
        else Image.fromarray((np.arange(1200).reshape(30, 40) * 50).astype(np.uint16))
    )
    path = tmp_path / f"image_{mode.replace(';', '')}.png"
    image.save(path)
    array = decode(path, 24).pixels
    assert array.shape == (24, 24, 3) and array.dtype == np.uint8
    if mode == "I;16":
        assert array.min() <= 5 and array.max() >= 250  # rescaled, not clipped at 255


def test_a_cache_that_cannot_be_written_is_a_user_error(outputs, tmp_path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    overrides = ["data.image_size=16", "data.max_per_class=4", "data.classes=[Beach,Port]"]
    with pytest.raises(UserError, match=f"decode cache in {blocked}/cache .*set paths.cache"):
        _load(overrides, blocked / "cache")


def test_an_atomic_file_appears_whole_private_or_not_at_all(tmp_path) -> None:
    path = tmp_path / "entry.json"
    with atomic_file(path) as stream:
        stream.write(b"first")
        assert not path.exists()  # nothing to read until the block ends
    assert path.read_bytes() == b"first" and path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(RuntimeError), atomic_file(path) as stream:
        stream.write(b"half")
        raise RuntimeError("the writer failed")
    assert path.read_bytes() == b"first"  # the old entry stands
    assert [p.name for p in tmp_path.iterdir()] == ["entry.json"]  # and no leftover


def test_missing_dataset_names_the_folder(outputs, tmp_path) -> None:
    with pytest.raises(UserError, match="looked in /nowhere/aid"):
        _load(["data.path=/nowhere/aid"], tmp_path)


def test_unknown_class_lists_the_real_ones(outputs, tmp_path) -> None:
    with pytest.raises(UserError, match=r"unknown class 'Harbour'.*Port"):
        _load(["data.classes=[Beach,Harbour]"], tmp_path)


def test_shipsnet_json_loader(outputs, tmp_path) -> None:
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, size=(30, 3 * 20 * 20), dtype=np.uint8)
    chips[:, : 20 * 20] = 255  # red plane saturated: checks the channel-first layout
    labels = [i % 2 for i in range(30)]
    path = tmp_path / "planesnet.json"
    path.write_text(json.dumps({"data": chips.tolist(), "labels": labels}))
    data = _load(
        ["data=shipsnet", f"data.path={path}", "data.chip_size=20", "data.image_size=20"], tmp_path
    )
    assert data.class_names == ("negative", "positive")
    assert (data.train.images[..., 0] == 255).all()
    assert len(data.train) + len(data.val) + len(data.test) == 30


def test_harvey_is_a_binary_task_with_damage_positive(outputs, tmp_path, data_dir) -> None:
    """The real Harvey chips through data=harvey: its folders' own names, damage as class 1."""
    data = _load(["data=harvey", "data.image_size=16", "data.max_per_class=30"], tmp_path)
    assert data.class_names == ("no_damage", "damage")
    labels = np.concatenate([s.labels for s in data.splits().values()])
    assert (labels == 1).sum() == 30 and (labels == 0).sum() == 30
    sources = [src for s in data.splits().values() for src in s.sources]
    damaged = {src for src, label in zip(sources, labels, strict=True) if label == 1}
    assert damaged and all("/damage/" in src for src in damaged)
    with pytest.raises(UserError, match=r"unknown class 'damaged' in data\.positive_classes"):
        _load(["data=harvey", "data.positive_classes=[damaged]"], tmp_path)


def test_real_shipsnet_chips_load_channel_planar(outputs, tmp_path, data_dir) -> None:
    """20 real ShipsNet chips in the Kaggle JSON layout: every pixel where the file puts it."""
    path = data_dir / "shipsnet_sample" / "shipsnet_20.json"
    record = json.loads(path.read_text())
    # the file: one row per chip, 6,400 red values, then green, then blue, each row-major
    expected = np.asarray(record["data"], np.uint8).reshape(-1, 3, 80, 80).transpose(0, 2, 3, 1)
    data = _load(["data=shipsnet", f"data.path={path}", "data.split.seed=1"], tmp_path)
    assert data.class_names == ("negative", "positive")
    images = _images_of(data)
    labels = np.concatenate([split.labels for split in data.splits().values()])
    assert sorted(labels.tolist()) == sorted(record["labels"]) and labels.sum() == 9
    by_bytes = {
        chip.tobytes(): label for chip, label in zip(expected, record["labels"], strict=True)
    }
    for image, label in zip(images, labels, strict=True):
        assert by_bytes[image.tobytes()] == label  # the same chip, pixel for pixel, same label


def test_an_image_budget_is_shared_out_over_the_classes(outputs, data_dir) -> None:
    from satsweep.data.catalog import build_catalog, per_class_cap

    assert per_class_cap(None, 3000, 30) == 100 and per_class_cap(None, 3000, 2) == 1500
    assert per_class_cap(40, 3000, 2) == 40 and per_class_cap(None, None, 5) is None
    # on AID the quick sweep's budget picks exactly the images 100 per class did
    budget = build_catalog(load_run_config(["data.max_images=3000"]).data)
    per_class = build_catalog(load_run_config(["data.max_per_class=100"]).data)
    assert budget.sources == per_class.sources and len(budget.sources) == 3000
    # on a two-class set the same budget validates on 15% of 3,000 images, not of 200
    harvey = build_catalog(load_run_config(["data=harvey", "data.max_images=3000"]).data)
    assert np.bincount(harvey.labels).tolist() == [1500, 1500]


def test_a_training_share_shrinks_only_the_training_split(outputs, tmp_path) -> None:
    base = ["data.image_size=16", "data.max_per_class=40", "data.classes=[Beach,Forest,Port]"]
    whole, third, again = (
        _load([*base, f"data.train_share={share}"], tmp_path) for share in (1.0, 0.3, 0.3)
    )
    assert np.bincount(whole.train.labels).tolist() == [28, 28, 28]
    assert np.bincount(third.train.labels).tolist() == [9, 9, 9]  # 0.3 of each class, rounded up
    # judged on the same images as a run on the whole split: the final fit's
    for name in ("val", "test"):
        assert (getattr(third, name).sources == getattr(whole, name).sources).all()
    assert set(third.train.sources) < set(whole.train.sources)
    assert (third.train.sources == again.train.sources).all()  # seeded: the same draw again
    # nested: a larger share keeps every image a smaller one kept
    half = _load([*base, "data.train_share=0.5"], tmp_path)
    assert set(third.train.sources) < set(half.train.sources)
    tiny = _load([*base, "data.train_share=0.001"], tmp_path)
    assert np.bincount(tiny.train.labels).tolist() == [1, 1, 1]  # every class keeps one
    other_seed = _load([*base, "data.train_share=0.3", "data.split.seed=7"], tmp_path)
    assert set(other_seed.train.sources) != set(third.train.sources)


def _zip_of_classes(tmp_path: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, colour in (("Forest", (0, 120, 0)), ("SeaLake", (0, 0, 200))):
            for i in range(4):
                image = io.BytesIO()
                Image.new("RGB", (64, 64), colour).save(image, format="PNG")
                bundle.writestr(f"2750/{name}/{name}_{i}.png", image.getvalue())
    return buffer.getvalue()


def test_download_verifies_checksum_and_unpacks(tmp_path) -> None:
    archive = tmp_path / "served" / "EuroSAT.zip"
    archive.parent.mkdir()
    archive.write_bytes(_zip_of_classes(tmp_path))
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    cfg = DownloadConfig(
        enabled=True,
        url=archive.as_uri(),
        checksum=f"md5:{digest}",
        filename="EuroSAT.zip",
        subdir="2750",
    )
    target = tmp_path / "data" / "eurosat" / "2750"
    ensure_dataset(cfg, target)
    assert sorted(p.name for p in target.iterdir()) == ["Forest", "SeaLake"]


def test_download_with_wrong_checksum_is_refused(tmp_path) -> None:
    archive = tmp_path / "EuroSAT.zip"
    archive.write_bytes(_zip_of_classes(tmp_path))
    cfg = DownloadConfig(
        enabled=True,
        url=archive.as_uri(),
        checksum="md5:" + "0" * 32,
        filename="EuroSAT.zip",
        subdir="2750",
    )
    target = tmp_path / "data" / "2750"
    with pytest.raises(UserError, match="did not match checksum"):
        ensure_dataset(cfg, target)
    assert not target.exists() and not list((tmp_path / "data").glob("*.zip"))


def _images_of(data) -> np.ndarray:
    return np.concatenate([split.images for split in data.splits().values()])


def test_nodata_pixels_are_black_and_named(outputs, tmp_path, caplog) -> None:
    # float GeoTIFF-like chips: a gradient with a NaN corner, and one all-NaN chip
    root = tmp_path / "float_chips"
    for name in ("Water", "Land"):
        (root / name).mkdir(parents=True)
        for index in range(6):
            pixels = np.linspace(0.0, 1.0, 16 * 16, dtype=np.float32).reshape(16, 16) + index
            if index == 0:
                pixels[:4, :4] = np.nan
                pixels[4, 4] = np.inf
            Image.fromarray(pixels, mode="F").save(root / name / f"{index}.tif")
    Image.fromarray(np.full((16, 16), np.nan, np.float32), mode="F").save(root / "Land" / "x.tif")
    caplog.set_level(logging.WARNING, logger="satsweep")
    data = _load(["data=folder", f"data.path={root}", "data.image_size=16"], tmp_path / "c")
    assert "skipped 1 unreadable image file(s)" in caplog.text and "x.tif" in caplog.text
    assert "2 image(s) hold nodata pixels (NaN or infinite; 34 pixels in all)" in caplog.text
    images = _images_of(data)
    assert len(images) == 12
    # the stretch ignores nodata: every image spans the full range, not a black square
    assert all(image.max() == 255 for image in images)
    corners = [image for image in images if (image[:4, :4] == 0).all()]
    assert len(corners) == 2 and all(image[5:, 5:].mean() > 100 for image in corners)


def test_a_folder_of_splits_is_not_taken_for_classes(outputs, aid_subset, tmp_path) -> None:
    root = tmp_path / "splits"
    for split in ("train", "test"):
        for name in ("Beach", "Port"):
            (root / split / name).mkdir(parents=True)
            for image in sorted((aid_subset / name).glob("*.jpg"))[:3]:
                (root / split / name / image.name).write_bytes(image.read_bytes())
    with pytest.raises(
        UserError, match=r"holds the splits test, train, not classes: .*data\.path="
    ):
        _load(["data=folder", f"data.path={root}", "data.image_size=16"], tmp_path / "c")


def test_cmyk_exif_rotation_and_transparent_palettes_decode_as_seen(tmp_path) -> None:
    red = Image.new("RGB", (30, 20), (255, 0, 0))
    red.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    pixels = decode(tmp_path / "cmyk.jpg", 8).pixels
    assert pixels[..., 0].min() > 200 and pixels[..., 1:].max() < 60  # red, not inverted

    # a 30x20 image whose left half is white, stored with orientation 6 (rotate 90 on show)
    tall = np.zeros((20, 30, 3), np.uint8)
    tall[:, :15] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(tall).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    shown = decode(tmp_path / "rotated.jpg", 30).pixels  # squashed to 30x30, as shown
    assert shown[:10].mean() > 200 and shown[-10:].mean() < 50  # the white half is on top

    # a palette whose index 0 is transparent: composited on black, like RGBA
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([255, 255, 255, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, 5, 10))
    palette.save(tmp_path / "palette.png", transparency=0)
    decoded = decode(tmp_path / "palette.png", 10).pixels
    assert (decoded[:, :5] == (0, 0, 255)).all() and (decoded[:, 5:] == 0).all()

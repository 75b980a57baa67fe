"""load_dataset on real images: kohya folders, flat + labels, and every refusal naming its file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from evaluator.training.dataset import DatasetError, image_items, load_dataset


@pytest.fixture()
def paintings(shared_data) -> list[Path]:
    return sorted((shared_data / "images" / "paintings").glob("*.jpg"))[:4]


def kohya(root: Path, paintings: list[Path]) -> Path:
    """10_starry/ with two captioned images, 2_other sketch/ with one uncaptioned."""
    (root / "10_starry").mkdir(parents=True)
    (root / "2_other sketch").mkdir()
    for index, src in enumerate(paintings[:2]):
        shutil.copy(src, root / "10_starry" / f"img{index}.jpg")
        (root / "10_starry" / f"img{index}.txt").write_text(f"\nstarry, painting {index}\nsecond line ignored\n")
    shutil.copy(paintings[2], root / "2_other sketch" / "plain.jpg")
    (root / "10_starry" / "img0.npz").write_bytes(b"latent cache")
    return root


def test_kohya_layout_reads_repeats_concepts_and_captions(tmp_path, paintings):
    data = load_dataset(kohya(tmp_path / "ds", paintings))
    assert data.layout == "kohya"
    by_rel = {i.relpath: i for i in data.items}
    assert sorted(by_rel) == ["10_starry/img0.jpg", "10_starry/img1.jpg", "2_other sketch/plain.jpg"]
    first = by_rel["10_starry/img0.jpg"]
    assert (first.repeats, first.concept, first.caption) == (10, "starry", "starry, painting 0")
    plain = by_rel["2_other sketch/plain.jpg"]
    assert (plain.repeats, plain.concept, plain.caption) == (2, "other sketch", "other sketch")  # kohya class token
    assert plain.concept_id == "other-sketch"
    from PIL import Image

    with Image.open(paintings[0]) as image:
        assert (first.width, first.height) == image.size
    assert data.ignored == ["10_starry/img0.npz"]


def test_fingerprint_follows_content_not_location(tmp_path, paintings):
    one = load_dataset(kohya(tmp_path / "a", paintings))
    moved = shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert load_dataset(moved).fingerprint == one.fingerprint
    (moved / "10_starry" / "img1.txt").write_text("a different caption")
    assert load_dataset(moved).fingerprint != one.fingerprint


def test_caption_without_image_is_an_error_naming_the_file(tmp_path, paintings):
    root = kohya(tmp_path / "ds", paintings)
    orphan = root / "10_starry" / "lost.txt"
    orphan.write_text("a caption whose image was deleted")
    with pytest.raises(DatasetError, match="lost.txt: caption file without an image"):
        load_dataset(root)


def test_custom_caption_extension(tmp_path, paintings):
    root = kohya(tmp_path / "ds", paintings)
    (root / "10_starry" / "img0.caption").write_text("from the other extension")
    items = {i.relpath: i for i in load_dataset(root, caption_extension=".caption").items}
    assert items["10_starry/img0.jpg"].caption == "from the other extension"
    assert items["10_starry/img1.jpg"].caption == "starry"  # its .txt is not a caption now
    with pytest.raises(DatasetError, match="caption_extension"):
        load_dataset(root, caption_extension="txt")


@pytest.mark.parametrize("problem, message", [
    ("bad_folder", "folder name must be <repeats>_<concept>"),
    ("root_image", "image outside a <repeats>_<concept> folder"),
    ("unreadable", "unreadable image"),
])
def test_bad_kohya_folders_name_the_file(tmp_path, paintings, problem, message):
    root = kohya(tmp_path / "ds", paintings)
    if problem == "bad_folder":
        (root / "starry_no_repeats").mkdir()
        shutil.copy(paintings[3], root / "starry_no_repeats" / "x.jpg")
        culprit = "starry_no_repeats"
    elif problem == "root_image":
        shutil.copy(paintings[3], root / "loose.jpg")
        culprit = "loose.jpg"
    else:
        (root / "10_starry" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        culprit = "broken.png"
    with pytest.raises(DatasetError, match=message) as error:
        load_dataset(root)
    assert culprit in str(error.value)


def test_empty_dataset_is_refused(tmp_path):
    (tmp_path / "10_nothing").mkdir()
    with pytest.raises(DatasetError, match="holds no image"):
        load_dataset(tmp_path)


def test_flat_folder_with_labels(tmp_path, shared_data):
    src = shared_data / "images" / "paintings"
    data = load_dataset(src)  # its labels.csv is found by name
    assert data.layout == "flat" and len(data.items) == len(list(src.glob("*.jp*g")) + list(src.glob("*.png")))
    munch = next(i for i in data.items if i.relpath == "the_scream.jpg")
    assert (munch.concept, munch.caption, munch.repeats) == ("Edvard Munch", "Edvard Munch", 1)

    root = tmp_path / "flat"
    root.mkdir()
    for name in ("the_scream.jpg", "starry_night.jpg"):
        shutil.copy(src / name, root / name)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,artist,caption,repeats\nthe_scream.jpg,munch,a scream,3\nstarry_night.jpg,gogh,,\n")
    items = {i.relpath: i for i in load_dataset(root, labels=labels).items}
    assert (items["the_scream.jpg"].caption, items["the_scream.jpg"].repeats) == ("a scream", 3)
    assert (items["starry_night.jpg"].caption, items["starry_night.jpg"].repeats) == ("gogh", 1)


@pytest.mark.parametrize("rows, message", [
    ("the_scream.jpg,munch\nmissing.jpg,munch\n", "line 3: file 'missing.jpg' is not an image"),
    ("the_scream.jpg,munch\n", "starry_night.jpg: image not named in labels.csv"),
    ("the_scream.jpg,munch\nstarry_night.jpg,\n", "line 3: file 'starry_night.jpg' has an empty 'artist'"),
])
def test_flat_labels_problems_name_the_line_or_file(tmp_path, shared_data, rows, message):
    root = tmp_path / "flat"
    root.mkdir()
    for name in ("the_scream.jpg", "starry_night.jpg"):
        shutil.copy(shared_data / "images" / "paintings" / name, root / name)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,artist\n" + rows)
    with pytest.raises(DatasetError, match=message):
        load_dataset(root, labels=labels)


def test_image_items_of_a_plain_folder(tmp_path, paintings):
    for src in paintings[:2]:
        shutil.copy(src, tmp_path / src.name)
    (tmp_path / "notes.txt").write_text("not an image, not read")
    items = image_items(tmp_path, "a painting", "painting")
    assert [i.caption for i in items] == ["a painting", "a painting"] and {i.concept for i in items} == {"painting"}
    (tmp_path / "bad.jpg").write_bytes(b"no jpeg")
    with pytest.raises(DatasetError, match="bad.jpg: unreadable image"):
        image_items(tmp_path, "a painting", "painting")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no image"):
        image_items(tmp_path / "empty", "x", "y")

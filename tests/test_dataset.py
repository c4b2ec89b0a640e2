"""Scanning real folders: bad files skipped with reasons, stable splits, clear errors."""

import shutil

import pytest
from images import bad_images, good_images

from app.core.dataset import DatasetError, scan, split_of


def _fill(root, per_class=6, classes=("cats", "dogs")):
    images = list(good_images().items())
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            name, data = images[i % len(images)]
            (root / c / f"{c}_{i}_{name}").write_bytes(data)
    return root


def test_bad_files_are_listed_with_reasons_and_skipped(tmp_path):
    root = _fill(tmp_path / "data", per_class=len(good_images()))
    for name, (data, _) in bad_images().items():
        (root / "cats" / name).write_bytes(data)
    (root / "cats" / ".DS_Store").write_bytes(b"\0\0")  # hidden: not used, but listed
    (root / "stray.jpg").write_bytes(good_images()["rgb.jpg"])  # not in a class folder: not used, but listed
    (root / "README.md").write_text("about these photos")  # the dataset's documentation: not an image
    data = scan(root)
    reasons = {s.path.name: s.reason for s in data.skipped}
    assert set(reasons) == set(bad_images()) | {".DS_Store", "stray.jpg"}
    assert "hidden" in reasons[".DS_Store"] and "class folder" in reasons["stray.jpg"]
    for name, (_, word) in bad_images().items():
        assert word in reasons[name], (name, reasons[name])
    assert len(data.items) == 2 * len(good_images())  # every odd format and mode accepted
    assert data.classes == ["cats", "dogs"]


def test_split_is_stable_when_images_are_added(tmp_path):
    root = _fill(tmp_path / "data", per_class=14)
    before = {item.path.name: item.split for item in scan(root).items}
    shutil.copytree(root / "cats", root / "more_cats")
    for i in range(30):
        (root / "dogs" / f"new_{i}.jpg").write_bytes(good_images()["rgb.jpg"])
    after = {item.path.name: item.split for item in scan(root).items if item.path.parent.name != "more_cats"}
    assert all(after[name] == split for name, split in before.items())


def test_split_rule_matches_retrain_py():
    assert split_of("leaf_nohash_1.jpg", 10, 10) == split_of("leaf_nohash_2.jpg", 10, 10)
    names = [f"img_{i}.jpg" for i in range(4000)]
    splits = [split_of(n, 10, 10) for n in names]
    assert 0.08 < splits.count("validation") / 4000 < 0.12
    assert 0.08 < splits.count("test") / 4000 < 0.12


def test_every_class_keeps_a_training_image(tmp_path):
    root = _fill(tmp_path / "data", per_class=2)
    data = scan(root, validation_percent=45, test_percent=50)
    for label in range(2):
        assert any(i.split == "train" and i.label == label for i in data.items)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda r: _fill(r, classes=("only",)), "1 class folder"),
        (lambda r: r.mkdir(), "0 class folders"),
        (lambda r: (_fill(r), (r / "birds").mkdir(), (r / "birds" / "x.jpg").write_bytes(b"")), "class 'birds' has 0"),
        (
            lambda r: _fill(r, classes=("cats", "two\nlines")),
            r"1 class folder.*'two\\x0alines' cannot be a class: .*line break",
        ),
    ],
)
def test_unusable_folders_give_one_clear_sentence(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DatasetError, match=message):
        scan(root)


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="is not a folder"):
        scan(tmp_path / "nope")


def test_warnings_for_imbalance_and_duplicates(tmp_path):
    root = _fill(tmp_path / "data", per_class=4)
    for i in range(20):
        (root / "dogs" / f"extra_{i}.png").write_bytes(good_images()["rgb.png"])
    notes = " ".join(scan(root).warnings)
    assert "imbalanced" in notes and "more than one class" in notes


def test_non_utf8_file_names_are_used(tmp_path):
    """Names that are not UTF-8 (os.fsdecode's surrogate escapes) are scanned and split by their bytes."""
    import os

    root = _fill(tmp_path / "data", per_class=3)
    odd = root / "cats" / os.fsdecode(b"chat_\xe9t\xe9.jpg")
    odd.write_bytes(good_images()["rgb.jpg"])
    data = scan(root)
    assert odd in {item.path for item in data.items} and not data.skipped
    assert next(item.split for item in data.items if item.path == odd) == split_of(odd.name, 10, 10)

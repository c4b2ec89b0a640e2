"""The user's exclusions (IMAGE_DIR/.retrain-studio/excluded.txt) and the quick refusal of absurd folders."""

import shutil
import time
from pathlib import Path

import pytest

from app.core.dataset import (
    DatasetError,
    check_root,
    excluded_files,
    loose_images,
    scan,
    set_excluded,
)
from app.paths import sample_data_dir


@pytest.fixture
def photos(tmp_path) -> Path:
    return Path(shutil.copytree(sample_data_dir(), tmp_path / "photos"))


def test_excluded_files_are_skipped_and_can_come_back(photos):
    chosen = sorted((photos / "bag").iterdir())[:2]
    set_excluded(photos, chosen)
    assert (photos / ".retrain-studio" / "excluded.txt").read_text().splitlines() == [f"bag/{p.name}" for p in chosen]
    data = scan(photos)
    assert len(data.items) == 118
    assert {(s.path, s.reason) for s in data.skipped} == {(p, "excluded by you") for p in chosen}
    set_excluded(photos, [])
    assert len(scan(photos).items) == 120 and excluded_files(photos) == set()


def test_a_hostile_exclusion_list_never_reaches_outside_the_folder(photos, tmp_path):
    outside = tmp_path / "outside.png"
    shutil.copy(next((photos / "bag").iterdir()), outside)
    listing = photos / ".retrain-studio" / "excluded.txt"
    listing.parent.mkdir()
    inside = next((photos / "dress").iterdir())
    listing.write_bytes(b"../outside.png\n/etc/passwd\n\n\x00\xff junk\n" + f"dress/{inside.name}\n".encode())
    assert excluded_files(photos) == {inside.resolve()}
    listing.write_bytes(b"\xff\xfe\x00 not utf-8")
    assert excluded_files(photos) == set() and len(scan(photos).items) == 120


def test_absurd_folders_are_refused_without_walking_them(tmp_path):
    with pytest.raises(DatasetError, match="whole disk"):
        check_root("/")
    root = tmp_path / "nested"
    for i in range(50):
        (root / f"d{i}" / "a" / "b").mkdir(parents=True)
    shutil.copy(next((sample_data_dir() / "bag").iterdir()), root / "loose.png")
    start = time.perf_counter()
    with pytest.raises(DatasetError, match=r"has 0 class folders with images \(and 1 loose image\)"):
        check_root(root)
    assert time.perf_counter() - start < 0.5
    assert loose_images(root) == [root / "loose.png"]
    check_root(sample_data_dir())  # a real data set passes


def test_odd_names_survive_the_round_trip(photos):
    source = next((photos / "bag").iterdir())
    odd = [
        photos / "bag" / name
        for name in (" leading space.png", "trailing space .png", "ünï cødé 写真.png", "#hash;semi.png")
    ]
    for path in odd:
        shutil.copy(source, path)
    set_excluded(photos, odd)
    assert excluded_files(photos) == {p.resolve() for p in odd}
    assert {s.path.name for s in scan(photos).skipped} == {p.name for p in odd}
    broken = photos / "bag" / "line\nbreak.png"
    shutil.copy(source, broken)
    with pytest.raises(DatasetError, match="line break"):
        set_excluded(photos, [broken])
    assert excluded_files(photos) == {p.resolve() for p in odd}  # the old list is untouched

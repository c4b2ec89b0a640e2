"""The data review (issue 12) on real data: Fashion-MNIST with planted wrong labels and re-encoded copies."""

from __future__ import annotations

import json
import shutil

import fashion_mnist
import numpy as np
import pytest
from commands import cli
from images import bad_images
from PIL import Image

from app.core import review
from app.core.dataset import class_names, set_excluded

CLASSES = [1, 3, 7, 8, 9]  # trouser, dress, sneaker, bag, ankle boot
PER_CLASS = 60  # 300 images: 15 wrong labels, 20 copies; about 20 s with a cold cache, under 1 s warm


@pytest.fixture(scope="module")
def planted(tmp_path_factory, cache_dir):
    """(clean folder, noisy folder, truth, clean review, noisy review): the same 300 images, then corrupted."""
    base = tmp_path_factory.mktemp("review")
    clean = fashion_mnist.write_folders(base / "clean", PER_CLASS, CLASSES, start=100)
    noisy = base / "noisy"
    shutil.copytree(clean, noisy)
    truth = fashion_mnist.plant_noise(noisy, wrong_fraction=0.05, copies=20, seed=3)
    return (
        clean,
        noisy,
        truth,
        review.review_folder(clean, cache_dir=cache_dir),
        review.review_folder(noisy, cache_dir=cache_dir),
    )


@pytest.mark.thorough  # the real weights' claim (planted: 300 images through EfficientNet-Lite0)
def test_wrong_labels_are_found_with_useful_precision(planted):
    _, _, truth, _, report = planted
    wrong = {str(p) for p in truth["wrong"]}
    flagged = [row["path"] for row in report["label_issues"]]
    found = wrong & set(flagged)
    recall, precision = len(found) / len(wrong), len(found) / max(1, len(flagged))
    print(
        f"\nwrong labels: {len(wrong)} planted, {len(flagged)} reported, {len(found)} right: "
        f"recall {recall:.2f}, precision {precision:.2f}"
    )
    assert len(wrong) == 15
    assert recall >= 0.8 and precision >= 0.4
    for row in report["label_issues"]:
        if row["path"] in wrong:  # the suggestion is the class the image came from
            assert row["suggested"] == truth["wrong"][next(p for p in truth["wrong"] if str(p) == row["path"])]
    scores = [row["score"] for row in report["label_issues"]]
    assert scores == sorted(scores, reverse=True)  # most suspicious first


@pytest.mark.thorough  # the real weights' claim (planted: 300 images through EfficientNet-Lite0)
def test_reencoded_resized_copies_are_grouped_and_leaks_marked(planted):
    _, _, truth, _, report = planted
    found = 0
    for original, copy in truth["copies"]:
        groups = [g for g in report["duplicates"] if str(copy) in g["paths"]]
        if groups and str(original) in groups[0]["paths"]:
            found += 1
            group = groups[0]
            assert group["leak"] == (len(set(group["splits"])) > 1)
            assert len(group["splits"]) == len(group["paths"]) and not group["exact"]
    leaks = sum(g["leak"] for g in report["duplicates"])
    print(f"\ncopies: {found} of {len(truth['copies'])} found; {len(report['duplicates'])} groups, {leaks} leaks")
    assert found >= 18 and leaks >= 1  # 20 copies spread over 3 splits: some leak (seed 3: 7)
    assert [g["leak"] for g in report["duplicates"]] == sorted(
        (g["leak"] for g in report["duplicates"]), reverse=True
    )  # leaks first


@pytest.mark.thorough  # the real weights' claim (planted: 300 images through EfficientNet-Lite0)
def test_clean_set_false_alarms_are_few(planted):
    clean, _, _, report, _ = planted
    images = report["images"]
    print(
        f"\nclean set ({images} images): {len(report['label_issues'])} label issues, "
        f"{len(report['duplicates'])} duplicate groups, {len(report['outliers'])} outliers; "
        f"seconds {report['seconds']}"
    )
    assert images == 300
    assert len(report["label_issues"]) <= 0.03 * images  # measured: 4 (Fashion-MNIST's own odd ones)
    assert report["duplicates"] == []  # no two distinct images taken for copies


def test_identical_images_in_two_classes_and_an_outlier_are_reported(tmp_path, cache_dir, standin_backbone):
    root = fashion_mnist.write_folders(tmp_path / "data", 12, [1, 8], start=300)
    twin = next((root / "bag").glob("*.png"))
    shutil.copy(twin, root / "trouser" / "twin.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "bag" / "static.png")
    report = review.review_folder(root, standin_backbone, cache_dir=cache_dir)
    exact = [g for g in report["duplicates"] if g["exact"]]
    assert len(exact) == 1 and exact[0]["similarity"] == 1.0
    assert sorted(exact[0]["classes"]) == ["bag", "trouser"]
    assert report["outliers"] and report["outliers"][0]["path"] == str(root / "bag" / "static.png")


def test_exclusions_are_honoured_and_a_warm_cache_never_loads_the_backbone(tmp_path, cache_dir, standin_backbone):
    root = fashion_mnist.write_folders(tmp_path / "data", 10, [1, 8], start=400)
    left_out = sorted((root / "bag").glob("*.png"))[0]
    set_excluded(root, {left_out})
    for name, (data, _reason) in list(bad_images().items())[:4]:  # skipped by the scan, never the run's error
        (root / "bag" / f"bad_{name}").write_bytes(data)
    review.review_folder(root, standin_backbone, cache_dir=cache_dir)  # warms the cache
    seen = []
    report = review.review_folder(root, standin_backbone, cache_dir=cache_dir, on_event=seen.append)
    assert report["images"] == 19
    every = (
        {p for g in report["duplicates"] for p in g["paths"]}
        | {r["path"] for r in report["outliers"]}
        | {r["path"] for r in report["label_issues"]}
    )
    assert str(left_out) not in every
    assert not any(e["event"] == "stage" and e["stage"] == "backbone" for e in seen)
    assert seen[-1] is report and report["event"] == "review"


def test_held_out_leaks_keep_the_earliest_split():
    event = {
        "duplicates": [
            {"paths": ["a", "b", "c"], "splits": ["test", "train", "validation"], "leak": True},
            {"paths": ["d", "e"], "splits": ["test", "validation"], "leak": True},
            {"paths": ["f", "g"], "splits": ["test", "test"], "leak": False},
        ]
    }
    assert review.held_out_leaks(event) == {"a", "c", "d"}


def test_tiny_and_degenerate_inputs_do_not_fail():
    one = review.find_problems(np.ones((1, 8), np.float32), [0], ["train"], ["x"], ["p"], ["a", "b"])
    assert one["label_issues"] == [] and one["duplicates"] == [] and one["outliers"] == []
    same = np.ones((4, 8), np.float32)  # every vector identical (a backbone that outputs constants)
    report = review.find_problems(same, [0, 0, 1, 1], ["train"] * 4, list("abcd"), list("abcd"), ["a", "b"])
    assert all(np.isfinite(row["score"]) for row in report["label_issues"])
    odd = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    odd[2] = np.nan  # a backbone that broke on one batch: that image's error, never the run's
    odd[3, 0] = np.inf
    report = review.find_problems(
        odd, [0, 0, 0, 1, 1, 1], ["train"] * 6, list("abcdef"), list("abcdef"), ["a", "b"], np.eye(6, 8)
    )
    assert report["event"] == "review" and all(np.isfinite(r["score"]) for r in report["outliers"])


def test_class_names_lists_the_class_folders(tmp_path):
    for name in ("cats", "dogs", ".hidden"):
        (tmp_path / name).mkdir()
    assert class_names(tmp_path) == ["cats", "dogs"]


@pytest.mark.thorough  # the real weights' claim (planted: 300 images through EfficientNet-Lite0)
def test_review_cli_json_and_human(planted):
    _, noisy, truth, _, _ = planted
    result = cli("review", noisy, "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines[-1]["event"] == "review" and {e["event"] for e in lines[:-1]} >= {"progress", "stage"}
    assert set(lines[-1]) >= {"label_issues", "duplicates", "outliers", "seconds"}
    assert set(lines[-1]["label_issues"][0]) >= {"path", "given", "suggested", "score"}
    assert set(lines[-1]["duplicates"][0]) >= {"paths", "similarity", "splits", "leak"}
    human = cli("review", noisy)
    assert human.returncode == 0
    assert human.stdout.startswith("Reviewed 320 images") and "Likely wrong labels" in human.stdout
    assert "LEAK" in human.stdout


def test_review_cli_errors_are_one_line(tmp_path):
    missing = cli("review", tmp_path / "nowhere")
    last = missing.stderr.strip().splitlines()[-1]
    assert missing.returncode == 1 and last == f"retrain-studio: {tmp_path / 'nowhere'} is not a folder"
    bad = cli("review", tmp_path, "--test-percent", "120")
    assert bad.returncode == 2 and "--test-percent" in bad.stderr


def test_training_reviews_by_default_and_keeps_a_summary(trained):
    reviews = [e for e in trained["events"] if e["event"] == "review"]
    assert len(reviews) == 1 and reviews[0]["images"] == 200
    meta = json.loads((trained["version_dir"] / "metadata.json").read_text())
    assert meta["review"]["label_issues"] == len(reviews[0]["label_issues"])
    assert meta["review"]["left_out_of_evaluation"] == len(review.held_out_leaks(reviews[0]))
    assert meta["training"]["review"] is True


@pytest.mark.thorough  # over a second: a training
def test_training_leaves_leaking_copies_out_of_the_test_split(tmp_path, cache_dir, standin_backbone):
    root = fashion_mnist.write_folders(tmp_path / "data", 20, [1, 8], start=500)
    from app.core.dataset import split_of

    for original in sorted(root.glob("*/*.png")):  # copy every test image under a name that hashes into train
        if split_of(original.name, 10, 10) == "test":
            for n in range(100):
                name = f"again_{n}_{original.stem}.png"
                if split_of(name, 10, 10) == "train":
                    shutil.copy(original, original.parent / name)
                    break
    from app.core.training import TrainSettings, run

    seen = []
    where = {"cache_dir": str(cache_dir), "backbone": standin_backbone}
    done = run(
        TrainSettings(str(root), str(tmp_path / "models"), **where, tflite="none"),
        on_event=seen.append,
    )
    event = next(e for e in seen if e["event"] == "review")
    test_count = sum(1 for p in root.glob("*/train_*.png") if split_of(p.name, 10, 10) == "test")
    assert test_count and sum(g["leak"] and g["exact"] for g in event["duplicates"]) == test_count
    assert done["metrics"]["test_images"] == 0
    assert any(e["event"] == "warning" and "left out of evaluation" in e["message"] for e in seen)
    quiet = []
    run(
        TrainSettings(str(root), str(tmp_path / "models"), **where, tflite="none", review=False),
        on_event=quiet.append,
    )
    assert not any(e["event"] == "review" for e in quiet)
    assert any(e["event"] == "warning" and "review is off" in e["message"] for e in quiet)  # says it did not


def test_moves_stay_inside_the_folder_and_never_overwrite(tmp_path):
    from app.core.dataset import DatasetError

    root = tmp_path / "data"
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
    image = root / "cats" / "a.png"
    image.write_bytes(b"mine")
    (root / "dogs" / "a.png").write_bytes(b"theirs")
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"x")
    for path, class_name in (
        (outside, "dogs"),
        (image, ".."),
        (image, "../.."),
        (image, "birds"),
        (root / "cats" / "missing.png", "dogs"),
    ):
        with pytest.raises(DatasetError):
            review.move_to_class(root, path, class_name)
    moved = review.move_to_class(root, image, "dogs")
    assert moved == root / "dogs" / "a (2).png" and moved.read_bytes() == b"mine"
    assert (root / "dogs" / "a.png").read_bytes() == b"theirs" and not image.exists()
    image.write_bytes(b"new one with the old name")  # the old name is taken meanwhile: undo picks a free one
    back = review.move_back(moved, image)
    assert back == root / "cats" / "a (2).png" and back.read_bytes() == b"mine"
    assert image.read_bytes() == b"new one with the old name"


def test_near_copies_are_found_across_blocks_of_rows_and_at_any_scale():
    """1,100 rows take two blocks of similarities; copies within and across them are each one group, and
    multiplying the vectors by 1e30 or 1e-30 (float32 squares overflow or vanish) changes no finding."""
    rng = np.random.default_rng(0)
    n = 1100
    vectors = rng.normal(size=(n, 32)).astype(np.float32)
    thumbs = rng.normal(size=(n, 64)).astype(np.float32)
    planted = [(5, 1050), (1000, 1010), (1060, 1070)]  # across the blocks, inside the first, inside the second
    for a, b in planted:
        vectors[b], thumbs[b] = vectors[a] * 1.01, thumbs[a]
    thumbs -= thumbs.mean(axis=1, keepdims=True)
    thumbs /= np.linalg.norm(thumbs, axis=1, keepdims=True)
    labels, names = [i % 2 for i in range(n)], [f"{i:04d}" for i in range(n)]
    reports = [
        review.find_problems(vectors * scale, labels, ["train"] * n, names, names, ["a", "b"], thumbs)
        for scale in (1.0, 1e30, 1e-30)
    ]
    groups = [g["paths"] for g in reports[0]["duplicates"]]
    assert sorted(groups) == sorted([f"{a:04d}", f"{b:04d}"] for a, b in planted)
    for report in reports[1:]:
        assert [g["paths"] for g in report["duplicates"]] == groups
        assert report["label_issues"] == reports[0]["label_issues"]
        assert report["outliers"] == reports[0]["outliers"]

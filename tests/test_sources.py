"""Training from several folders: sources merged by class name, a stable split, and the CLI that names them."""

import itertools
from pathlib import Path

import pytest
from commands import cli
from images import copy_sample

from app.core.dataset import (
    CLASS,
    DatasetError,
    Source,
    excluded_files,
    scan,
    set_excluded,
)
from app.core.training import TrainSettings, class_change
from app.paths import sample_data_dir


@pytest.fixture
def three(tmp_path) -> list[Source]:
    """Three folders of class folders; 'bag' and 'dress' each come from two of them."""
    a = copy_sample({"bag": slice(0, 15), "dress": slice(0, 30)}, tmp_path / "a")
    b = copy_sample({"bag": slice(15, 30), "sneaker": slice(0, 30)}, tmp_path / "b")
    c = copy_sample({"trouser": slice(0, 30), "dress": slice(0, 0)}, tmp_path / "c")  # an empty 'dress' folder
    return [Source(str(a)), Source(str(b)), Source(str(c))]


def _splits(data) -> dict[Path, str]:
    return {item.path: item.split for item in data.items}


def test_two_sources_with_an_overlapping_class_merge_into_one(three):
    data = scan(three[:2])
    assert data.classes == ["bag", "dress", "sneaker"]
    assert {c: sum(n.values()) for c, n in data.counts().items()} == {"bag": 30, "dress": 30, "sneaker": 30}
    assert data.origins()["bag"] == {three[0].path: 15, three[1].path: 15}
    assert scan(sample_data_dir()).classes == ["bag", "dress", "sneaker", "trouser"]  # one folder, as before


def test_three_sources_merge_and_reordering_them_never_moves_an_image(three):
    first = scan(three, validation_percent=20, test_percent=20)
    assert first.classes == ["bag", "dress", "sneaker", "trouser"] and len(first.items) == 120
    reference = scan(sample_data_dir(), validation_percent=20, test_percent=20)  # the same images in one folder
    by_name = {(reference.classes[i.label], i.path.name): i.split for i in reference.items}
    for order in itertools.permutations(three):
        data = scan(list(order), validation_percent=20, test_percent=20)
        assert data.classes == first.classes and _splits(data) == _splits(first)
        assert {(data.classes[i.label], i.path.name): i.split for i in data.items} == by_name
    alone = scan(three[:1] + three[2:], validation_percent=20, test_percent=20)  # and adding a source keeps them
    assert set(_splits(alone).items()) <= set(_splits(first).items())


def test_a_one_class_folder_source_takes_its_name_or_the_folders(three, tmp_path):
    shirts = copy_sample({"sneaker": slice(0, 10)}, tmp_path / "usb") / "sneaker"
    data = scan([three[0], Source(str(shirts), CLASS, "shirt")])
    assert data.classes == ["bag", "dress", "shirt"] and data.origins()["shirt"] == {str(shirts): 10}
    merged = scan([three[1], Source(str(shirts), CLASS)])  # named after its folder: merges into 'sneaker'
    assert merged.classes == ["bag", "sneaker"]
    assert sum(merged.counts()["sneaker"].values()) == 40  # the same names and bytes in other files: all kept
    with pytest.raises(DatasetError, match="cannot be a class"):
        scan([three[0], Source(str(shirts), CLASS, "bad\nname")])
    with pytest.raises(DatasetError, match="1 class folder"):
        scan([Source(str(shirts), CLASS, "shirt")])


def test_the_same_file_name_in_one_class_from_two_sources_keeps_both_in_one_split(three, tmp_path):
    """The rule: the split comes from the class and file name, so two files of one name share a split."""
    twin = copy_sample({"bag": slice(0, 15)}, tmp_path / "twin")  # the names (and bytes) of a/bag, as other files
    data = scan(three + [Source(str(twin))], validation_percent=30, test_percent=30)
    bags = [i for i in data.items if data.classes[i.label] == "bag"]
    assert len(bags) == 45
    by_name: dict[str, set] = {}
    for item in bags:
        by_name.setdefault(item.path.name, set()).add(item.split)
    assert all(len(splits) == 1 for splits in by_name.values())
    assert len(scan(three + [three[0]]).items) == 120  # the same folder twice: each file used once


def test_each_source_keeps_its_own_exclusions(three, tmp_path):
    shirts = copy_sample({"sneaker": slice(0, 10)}, tmp_path / "usb") / "sneaker"
    set_excluded(three[1].path, [next((Path(three[1].path) / "bag").iterdir())])
    set_excluded(shirts, sorted(shirts.iterdir())[:3])
    data = scan(three + [Source(str(shirts), CLASS, "shirt")])
    assert sum(s.reason == "excluded by you" for s in data.skipped) == 4
    assert sum(data.counts()["shirt"].values()) == 7 and len(excluded_files(shirts)) == 3
    assert not any(".retrain-studio" in str(s.path) for s in data.skipped if s.reason != "excluded by you")


def test_class_change_reads_every_source(three, tmp_path):
    import json

    version = tmp_path / "models" / "m" / "1"
    version.mkdir(parents=True)
    (version / "metadata.json").write_text(json.dumps({"labels": ["bag", "dress", "sneaker"]}))
    settings = TrainSettings(three[0].path, str(tmp_path / "models"), name="m", sources=three[:2])
    assert class_change(settings) is None
    settings.sources = three
    assert class_change(settings) == (["bag", "dress", "sneaker"], ["bag", "dress", "sneaker", "trouser"])
    assert TrainSettings(three[0].path, "x").all_sources() == [Source(three[0].path)]  # the old single folder


@pytest.mark.parametrize(
    "args, words",
    [
        ((), "give at least one image folder"),
        (("--class", "shirts"), "--class takes NAME=DIR"),
        (("--class", "=somewhere"), "--class takes NAME=DIR"),
        (("--class", "shirt="), "--class takes NAME=DIR"),
        (("--class", "bad\nname=somewhere"), "cannot be a class"),
        (("--class", "../up=somewhere"), "its name is a path"),
        (("--class", "..=somewhere"), "its name is a path"),
    ],
)
def test_train_source_errors_are_one_sentence_and_exit_2(tmp_path, args, words):
    result = cli("train", *args, "-o", tmp_path / "models")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and words in result.stderr and result.stderr.startswith("retrain-studio: ")
    assert not (tmp_path / "models").exists()


def test_review_runs_on_the_merged_sources(three, tmp_path, cache_dir, standin_backbone):
    from app.core.review import review_folder

    shirts = copy_sample({"sneaker": slice(0, 10)}, tmp_path / "usb") / "sneaker"
    sources = three + [Source(str(shirts), CLASS, "sneaker")]
    report = review_folder(sources, standin_backbone, cache_dir=cache_dir)
    assert report["images"] == 130
    copies = [g for g in report["duplicates"] if g.get("exact")]  # the usb copies sit beside their originals
    assert sum(len(g["paths"]) for g in copies) >= 20 and all(str(shirts) in " ".join(g["paths"]) for g in copies)
    bad = cli("review", "--class", "x", "--json")
    assert bad.returncode == 2 and bad.stderr.startswith("retrain-studio: --class takes NAME=DIR")


def test_train_with_a_missing_class_folder_is_one_line_exit_1(tmp_path):
    result = cli("train", sample_data_dir(), "--class", f"shirt={tmp_path / 'nowhere'}", "-o", tmp_path / "models")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"retrain-studio: {tmp_path / 'nowhere'} is not a folder"


@pytest.mark.thorough  # over a second: two trainings
def test_retrain_after_adding_images_makes_the_next_version_and_embeds_only_the_new_ones(
    tmp_path, cache_dir, standin_backbone, monkeypatch, capsys
):
    import json

    import fashion_mnist

    from app import cli as app_cli
    from app.core import features

    a = fashion_mnist.write_folders(tmp_path / "a", 12, [1, 7], start=3000)  # trouser, sneaker
    usb = fashion_mnist.write_folders(tmp_path / "usb", 12, [8], start=3000) / "bag"
    models = tmp_path / "models"
    assert (
        app_cli.main(
            [
                "train",
                str(a),
                "--class",
                f"handbag={usb}",
                "-o",
                str(models),
                "--name",
                "m",
                "--epochs",
                "7",
                "--seed",
                "5",
                "--tflite",
                "none",
                "--json",
                "--cache-dir",
                str(cache_dir),
                "--backbone",
                standin_backbone,
            ]
        )
        == 0
    )
    first = json.loads((models / "m" / "1" / "metadata.json").read_text())
    assert first["labels"] == ["handbag", "sneaker", "trouser"]
    assert first["training"]["sources"] == [
        {"path": str(a), "kind": "folder", "classes": ["sneaker", "trouser"]},
        {"path": str(usb), "kind": "class", "name": "handbag", "classes": ["handbag"]},
    ]
    capsys.readouterr()

    fashion_mnist.write_folders(a, 4, [1, 7], start=3100)  # 8 new images
    embedded = []  # every vector the backbone computes goes into its cache (not the review's thumbnails): count them
    add = features.EmbeddingCache.add
    monkeypatch.setattr(
        features.EmbeddingCache,
        "add",
        lambda self, keys, vectors: (
            "thumbnail" not in self.folder.name and embedded.append(len(keys)),
            add(self, keys, vectors),
        ),
    )
    assert app_cli.main(["retrain", str(models / "m"), "--json", "--cache-dir", str(cache_dir)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert next(e for e in events if e["event"] == "new_images")["count"] == 8 == sum(embedded)
    assert kinds.index("new_images") < min(i for i, e in enumerate(events) if e.get("stage", "").startswith("embed_"))
    assert events[-1]["event"] == "done" and events[-1]["model_dir"] == str(models / "m" / "2")
    second = json.loads((models / "m" / "2" / "metadata.json").read_text())
    assert second["training"]["sources"] == first["training"]["sources"] and second["labels"] == first["labels"]
    assert (second["training"]["epochs"], second["training"]["seed"], second["training"]["tflite"]) == (7, 5, "none")
    assert sum(second["split_sizes"].values()) == sum(first["split_sizes"].values()) + 8

    fashion_mnist.write_folders(a, 3, [3], start=3000)  # a new class folder appears: said before any work
    assert app_cli.main(["retrain", str(models / "m"), "--cache-dir", str(cache_dir)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "retrain-studio: model 'm' was trained on handbag, sneaker, trouser but its folders now have dress, handbag, "
        "sneaker, trouser; pass --allow-new-classes to retrain it anyway"
    )
    assert sorted(p.name for p in (models / "m").iterdir() if p.name.isdigit()) == ["1", "2"]
    assert app_cli.main(["retrain", str(tmp_path / "nothing")]) == 1
    assert (
        capsys.readouterr().err == f"retrain-studio: {tmp_path / 'nothing'} has no model versions to retrain; "
        "train one first\n"
    )


def test_recorded_settings_refuse_what_cannot_be_retrained_and_read_old_versions(tmp_path):
    import json

    from app.core.training import TrainingError, recorded_settings

    version = tmp_path / "models" / "old" / "3"
    version.mkdir(parents=True)
    (version / "metadata.json").write_text(json.dumps({"labels": ["a", "b"]}))
    with pytest.raises(TrainingError, match=r"does not record how the model was trained; train it again"):
        recorded_settings(tmp_path / "models" / "old")
    (version / "metadata.json").write_text(
        json.dumps({"training": {"image_dir": str(tmp_path), "epochs": 9, "unknown_future_key": 1}})
    )
    settings, _ = recorded_settings(version.parent)  # a version from before sources were recorded
    assert settings.all_sources() == [Source(str(tmp_path))] and settings.epochs == 9 and settings.name == "old"
    assert settings.models_dir == str(tmp_path / "models")
    (version / "metadata.json").write_text(json.dumps({"training": {"sources": [{"path": 3, "kind": "folder"}]}}))
    with pytest.raises(TrainingError, match="does not record"):
        recorded_settings(version.parent)
    (version / "metadata.json").write_text(json.dumps({"training": {"image_dir": str(tmp_path), "epochs": -1}}))
    with pytest.raises(TrainingError, match="cannot be used: --epochs must be"):
        recorded_settings(version.parent)

"""The command line: a thin shell over app.core and app.inference (flags only, no logic).

Exit codes: 0 ok, 2 usage error, 1 anything else, always with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from app import classify_only, version_text
from app.imaging import printable
from app.inference.factory import LOCAL_BACKENDS


class UsageError(Exception):
    """Bad arguments: exit code 2."""


def _tensorflow_environment() -> None:
    """What TensorFlow reads at import, set before any command imports it.

    Library logs would add lines to the one-line error (gRPC logs a failed TLS handshake at INFO).  (Keras 2
    as ``tf.keras`` is set for every entry point in ``app/__init__.py``.)
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _default(name: str):
    """Training defaults live in one place, TrainSettings; the flags only show them."""
    from dataclasses import fields

    from app.core.training import TrainSettings

    return next(f.default for f in fields(TrainSettings) if f.name == name)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="retrain-studio",
        description=(
            "Turn folders of photos into an image classifier; classify images locally or with TF Serving. "
            "With no command, opens the desktop app."
        ),
    )
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help="train a classifier from IMAGE_DIR/<class>/<image> folders")
    _source_flags(train)
    train.add_argument(
        "-o", "--output", required=True, dest="models_dir", help="models folder (MODELS_DIR/NAME/VERSION)"
    )
    train.add_argument("--name", help="model name (default: the first image folder's name)")
    _backbone_flags(train)
    train.add_argument(
        "--epochs", type=int, default=_default("epochs"), help="most epochs for the head (early stopping ends sooner)"
    )
    train.add_argument("--batch-size", type=int, default=_default("batch_size"))
    train.add_argument("--learning-rate", type=float, default=_default("learning_rate"))
    train.add_argument(
        "--patience", type=int, default=_default("patience"), help="epochs without a better validation loss to stop"
    )
    train.add_argument("--dropout", type=float, default=_default("dropout"), help="dropout before the head (0-1)")
    train.add_argument("--label-smoothing", type=float, default=_default("label_smoothing"), help="0-1")
    _split_flags(train)
    train.add_argument("--augment", action="store_true", help="add augmented variants (embedded once, cached)")
    train.add_argument(
        "--augment-copies", type=int, default=_default("augment_copies"), help="augmented variants per image"
    )
    train.add_argument("--fine-tune", action="store_true", help="also train the backbone (slow; for large data)")
    train.add_argument("--fine-tune-epochs", type=int, default=_default("fine_tune_epochs"))
    train.add_argument("--fine-tune-learning-rate", type=float, default=_default("fine_tune_learning_rate"))
    train.add_argument("--seed", type=int, default=_default("seed"))
    train.add_argument("--cache-dir", help="where backbones and image features are cached")
    train.add_argument("--tflite", choices=["float", "dynamic", "int8", "none"], default=_default("tflite"))
    train.add_argument(
        "--unknown-rate",
        type=float,
        default=_default("unknown_rate"),
        metavar="F",
        help="share of held-out images of the model's own classes it may call unknown (sets the threshold)",
    )
    train.add_argument(
        "--min-accuracy",
        type=float,
        metavar="F",
        help="publish no version if the test accuracy is below F (0-1)",
    )
    train.add_argument("--json", action="store_true", help="print one JSON event per line")
    train.add_argument(
        "--allow-new-classes",
        action="store_true",
        help="add a version to NAME even if its newest version has other classes",
    )
    train.add_argument(
        "--no-review", action="store_true", help="skip the data review (wrong labels, duplicates, leaks, outliers)"
    )

    retrain = sub.add_parser(
        "retrain",
        help="train the next version of a model from its newest version's "
        "recorded folders and settings (only new images go through the backbone)",
    )
    retrain.add_argument("model", metavar="MODELS_DIR/NAME", help="the model's folder (holding its versions)")
    retrain.add_argument("--cache-dir", help="where backbones and image features are cached")
    retrain.add_argument("--json", action="store_true", help="print one JSON event per line")
    retrain.add_argument(
        "--allow-new-classes",
        action="store_true",
        help="retrain even if the folders now hold other classes than the newest version",
    )

    review = sub.add_parser("review", help="find likely wrong labels, duplicates, leaks between splits and outliers")
    _source_flags(review)
    _backbone_flags(review)
    _split_flags(review)
    review.add_argument("--cache-dir", help="where backbones and image features are cached")
    review.add_argument("--json", action="store_true", help="print one JSON event per line; the review last")

    sub.add_parser("backbones", help="list the feature extractors and whether they work offline").add_argument(
        "--json", action="store_true"
    )

    serve = sub.add_parser("serve-config", help="write MODELS_DIR/models.config for tensorflow/serving")
    serve.add_argument("models_dir", help="the folder holding NAME/VERSION model folders")
    serve.add_argument("--container-root", default="/models", help="where MODELS_DIR is mounted in the container")
    serve.add_argument("--stdout", action="store_true", help="print models.config instead of writing the files")
    serve.add_argument(
        "--batch-threads",
        type=int,
        metavar="N",
        help="num_batch_threads in batching_parameters.txt: the server's CPU cores (default: this machine's)",
    )

    classify = sub.add_parser("classify", help="classify image files or folders")
    source = classify.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a model version folder, or its base folder (highest version)")
    source.add_argument("--server", help="grpc://host:8500/NAME or http://host:8501/v1/models/NAME")
    classify.add_argument("--backend", choices=LOCAL_BACKENDS, default="tflite")
    classify.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    classify.add_argument("--top-k", type=int, default=3)
    classify.add_argument("--json", action="store_true")
    classify.add_argument(
        "--batch",
        type=int,
        default=1,
        metavar="N",
        help="images per model call; a server gets N images in one request (default 1)",
    )
    classify.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on stderr even when it is not a terminal (it shows on a terminal without --json)",
    )
    _backend_flags(classify)

    explain = sub.add_parser(
        "explain", help="show which parts of each image made the model answer as it did (heat-map overlays)"
    )
    explain.add_argument("--model", required=True, help="a model version folder, or its base folder (highest version)")
    explain.add_argument("images", nargs="+", metavar="IMAGE")
    explain.add_argument("-o", "--output", required=True, dest="out_dir", help="folder for <stem>.png and <stem>.npy")
    explain.add_argument("--json", action="store_true", help="print one JSON object per image")

    bench = sub.add_parser("bench", help="accuracy and timings of one or more backends on a labeled folder")
    bench.add_argument("test_dir", help="folder with one sub-folder of images per class (the ground truth)")
    bench.add_argument("--model", required=True, help="the model version or base folder (local backends)")
    bench.add_argument(
        "--backends",
        default="tflite,savedmodel",
        help="comma-separated: tflite, savedmodel, grpc://host:8500/NAME, http://host:8501/v1/models/NAME",
    )
    bench.add_argument(
        "--limit", type=int, help="at most N images, sampled across classes (a load sweep cycles through 256 at most)"
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object per backend (per level in a sweep)")
    bench.add_argument("--csv", metavar="FILE", help="also write the rows to FILE as CSV")
    load = bench.add_argument_group(
        "load sweep (like Triton's perf_analyzer; any of these flags turns it on)",
        "Each level keeps N requests in flight (one worker thread and classifier each), throws away warm-up "
        "requests, then measures windows until the last 3 agree within 10% in throughput and p95.",
    )
    load.add_argument("--concurrency", metavar="N,N,...", help="requests in flight, e.g. 1,2,4,8 (default 1)")
    load.add_argument("--batch", type=int, metavar="N", help="images per request (default 1)")
    window = load.add_mutually_exclusive_group()
    window.add_argument("--duration", type=float, metavar="S", help="seconds per measurement window (default 2)")
    window.add_argument(
        "--count", type=int, metavar="N", help="requests per measurement window (instead of --duration)"
    )
    load.add_argument(
        "--max-windows", type=int, metavar="N", help="windows per level before giving up on stability (default 10)"
    )
    load.add_argument("--warmup", type=int, metavar="N", help="requests thrown away per level (default 2 per worker)")
    _backend_flags(bench)
    return parser


LOAD_FLAGS = ("concurrency", "batch", "duration", "count", "max_windows", "warmup")


def _backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="TFLite interpreter threads (default: all cores)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds each remote call may take in all (connect, send, whole reply)",
    )
    parser.add_argument("--ca-file", help="CA certificate for grpcs:// or https:// servers")
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="read the bearer token from this file (safest: not shown by `ps`); or set $RETRAIN_STUDIO_TOKEN",
    )
    parser.add_argument(
        "--token",
        help="bearer token on the command line (visible to other users in `ps`; "
        "prefer --token-file or $RETRAIN_STUDIO_TOKEN)",
    )


def _token(args) -> str | None:
    """--token-file, else --token, else $RETRAIN_STUDIO_TOKEN (the file and the variable keep it out of `ps`)."""
    if args.token_file:
        try:  # opened non-blocking: a FIFO nobody writes to reads as empty instead of hanging `open`
            fd = os.open(Path(args.token_file).expanduser(), os.O_RDONLY | os.O_NONBLOCK)
            os.set_blocking(fd, True)  # a pipe with a writer (`--token-file <(pass show x)`) is waited for
            with open(fd, encoding="utf-8") as handle:
                token = handle.readline(4096).strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"cannot read --token-file {args.token_file} ({getattr(exc, 'strerror', None) or type(exc).__name__})"
            ) from None
        if not token:
            raise UsageError(f"--token-file {args.token_file} is empty")
        return token
    return args.token or os.environ.get("RETRAIN_STUDIO_TOKEN") or None


def _warn(message: str) -> None:
    print(f"retrain-studio: warning: {message}", file=sys.stderr)


def _backend_options(args, remote: bool) -> dict:
    if remote:
        if not 0 < args.timeout < float("inf"):
            raise UsageError("--timeout must be a positive number of seconds")
        return {"timeout_s": args.timeout, "ca_file": args.ca_file, "token": _token(args), "on_warning": _warn}
    return {"threads": args.threads} if args.threads else {}


def _image_files(paths: list[str]) -> list:
    """Every file met, each a ``Found`` (reason set when it is skipped): the one discovery rule."""
    from app.imaging import find_images

    try:
        return find_images(paths)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None


def _sources(args) -> list:
    """The DIRs (folders of class folders) then each --class NAME=DIR (one class), as dataset sources."""
    from app.core.dataset import CLASS, Source
    from app.imaging import class_name_problem

    sources = [Source(path) for path in args.image_dirs]
    for value in args.class_dirs:
        name, equals, folder = value.partition("=")
        if not equals or not name.strip() or not folder:
            raise UsageError(f"--class takes NAME=DIR (a class name, '=', then its folder), not {printable(value)!r}")
        if problem := class_name_problem(name):
            raise UsageError(f"--class name {printable(name)!r} cannot be a class: {problem}")
        sources.append(Source(folder, CLASS, name))
    if not sources:
        raise UsageError("give at least one image folder (DIR) or --class NAME=DIR")
    return sources


def _source_flags(parser: argparse.ArgumentParser) -> None:
    """Where the images come from, for train and review: DIRs of class folders and one-class --class NAME=DIR."""
    parser.add_argument(
        "image_dirs",
        nargs="*",
        metavar="DIR",
        help="folder with one sub-folder of images per class; several merge by class name",
    )
    parser.add_argument(
        "--class",
        dest="class_dirs",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="DIR holds the images of one class, NAME (repeatable; combines with DIRs)",
    )


def _backbone_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbone",
        default=_default("backbone"),
        help="efficientnet_lite0|1|2, a TF Hub handle, or a SavedModel folder",
    )
    parser.add_argument(
        "--trust-backbone",
        action="store_true",
        help="use a SavedModel folder backbone even if its graph reads or writes files or runs code",
    )


def _split_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--validation-percent", type=float, default=_default("validation_percent"))
    parser.add_argument("--test-percent", type=float, default=_default("test_percent"))


def source_arguments(sources) -> list[str]:
    """The command-line form of image sources: ``--class=NAME=DIR`` for each one-class folder, then ``--`` and
    the folders of class folders (so a folder named like a flag stays a folder).  The order of the sources never
    changes a split or the classes.

    Args:
        sources: ``dataset.Source`` objects (or folders).

    Returns:
        Arguments, to put last, that ``train`` and ``review`` parse back into the same sources (folders first).

    Raises:
        ValueError: A one-class folder's class name holds "=".
    """
    from app.core.dataset import CLASS, as_sources

    sources = as_sources(sources)
    odd = next((s.class_name() for s in sources if s.kind == CLASS and "=" in s.class_name()), None)
    if odd is not None:
        raise ValueError(f"the class name {printable(odd)!r} holds '=', which --class NAME=DIR cannot carry; rename it")
    return [f"--class={s.class_name()}={s.path}" for s in sources if s.kind == CLASS] + [
        "--",
        *[s.path for s in sources if s.kind != CLASS],
    ]


def train_arguments(settings, *, json_events: bool = True, allow_new_classes: bool = False) -> list[str]:
    """The ``train`` command line for ``settings``, with every field of TrainSettings, so that ``train_settings``
    of its parse gives ``settings`` back.  The GUI starts its training children with it.

    Args:
        settings: A ``training.TrainSettings``; its sources in ``source_arguments`` order (folders of classes
            first) to come back equal.
        json_events: Add ``--json`` (the child's events, one per line).
        allow_new_classes: Add ``--allow-new-classes``.

    Returns:
        The arguments after the program, starting with ``train``.
    """
    args = ["train", f"--output={settings.models_dir}"]
    if settings.name is not None:
        args.append(f"--name={settings.name}")
    for field in _VALUE_FLAGS:
        value = getattr(settings, field)
        if value is None:  # an optional setting left unset: no flag, and the parser's default None comes back
            continue
        args.append(f"--{_flag(field)}={value!r}" if isinstance(value, float) else f"--{_flag(field)}={value}")
    if settings.cache_dir is not None:
        args.append(f"--cache-dir={settings.cache_dir}")
    args += [flag for flag, wanted in _SWITCHES.items() if wanted(settings)]
    if allow_new_classes:
        args.append("--allow-new-classes")
    if json_events:
        args.append("--json")
    return args + source_arguments(settings.all_sources())


# TrainSettings fields given as --flag=VALUE (train_arguments) and read back as args.<field> (train_settings)
_VALUE_FLAGS = (
    "backbone",
    "epochs",
    "batch_size",
    "learning_rate",
    "patience",
    "dropout",
    "label_smoothing",
    "validation_percent",
    "test_percent",
    "augment_copies",
    "fine_tune_epochs",
    "fine_tune_learning_rate",
    "seed",
    "tflite",
    "unknown_rate",
    "min_accuracy",
)
_SWITCHES = {  # flag -> whether the settings ask for it
    "--augment": lambda s: s.augment,
    "--fine-tune": lambda s: s.fine_tune,
    "--trust-backbone": lambda s: s.trust_backbone,
    "--no-review": lambda s: not s.review,
}


def _flag(field: str) -> str:
    return field.replace("_", "-")


def train_settings(args):
    """The TrainSettings of parsed ``train`` arguments (``train_arguments``'s inverse).

    Raises:
        UsageError: no source, or a bad ``--class``.
    """
    from app.core.training import TrainSettings

    sources = _sources(args)
    return TrainSettings(
        image_dir=sources[0].path,
        models_dir=args.models_dir,
        name=args.name,
        cache_dir=args.cache_dir,
        augment=args.augment,
        fine_tune=args.fine_tune,
        trust_backbone=args.trust_backbone,
        review=not args.no_review,
        sources=sources,
        **{field: getattr(args, field) for field in _VALUE_FLAGS},
    )


def cmd_train(args) -> int:
    if classify_only():
        raise UsageError("this build classifies only; install the full Retrain Studio to train")
    settings = train_settings(args)
    where = ", ".join(source.path for source in settings.all_sources())
    return _train(
        settings,
        args,
        f"{where} {'has' if len(settings.all_sources()) == 1 else 'have'}",
        "choose another --name or pass --allow-new-classes",
    )


def cmd_retrain(args) -> int:
    if classify_only():
        raise UsageError("this build classifies only; install the full Retrain Studio to train")
    from app.core.training import recorded_settings

    settings, previous = recorded_settings(args.model, args.cache_dir)
    args.name = settings.name
    before = (previous.get("metrics") or {}).get("test_accuracy")
    return _train(
        settings,
        args,
        "its folders now have",
        "pass --allow-new-classes to retrain it anyway",
        before if isinstance(before, (int, float)) else None,
    )


def _train(settings, args, have: str, remedy: str, previous_accuracy: float | None = None) -> int:
    """Check, refuse a changed class set, run with progress on stderr (or JSON lines), and sum up: train and retrain."""
    if os.environ.get("RETRAIN_STUDIO_NICE", "").isdigit():  # the GUI's child: yield the CPU to the window
        os.nice(int(os.environ["RETRAIN_STUDIO_NICE"]))
    from app.core import events
    from app.core.export import OutputError, check_name
    from app.core.training import SettingsError, class_change, run

    try:  # before any work: nothing scanned, nothing imported, nothing written
        settings.check()
        if args.name is not None:
            check_name(args.name)
    except (SettingsError, OutputError) as exc:
        raise UsageError(str(exc)) from exc
    change = None if args.allow_new_classes else class_change(settings)
    if change:  # before any scanning: TF Serving clients of NAME would switch class sets silently
        message = (
            f"model '{settings.model_name()}' was trained on {', '.join(change[0])} but "
            f"{have} {', '.join(change[1])}; {remedy}"
        )
        raise UsageError(message)
    done = run(settings, on_event=events.json_lines() if args.json else _human_events())
    if not args.json:
        acc = done["metrics"]["test_accuracy"]
        print(f"Model written to {printable(done['model_dir'])}")
        print(
            (
                f"Test accuracy: {acc:.3f} on {done['metrics']['test_images']} images"
                if acc is not None
                else "No test images: accuracy not measured"
            )
            + (f" (previous version: {previous_accuracy:.3f})" if previous_accuracy is not None else "")
        )
        metrics = done["metrics"]
        if metrics.get("test_ece_before") is not None:
            print(
                f"Calibration: temperature {metrics['temperature']:.3f}, expected calibration error "
                f"{metrics['test_ece_before']:.3f} -> {metrics['test_ece_after']:.3f} on the test images"
            )
        if metrics.get("test_unknown_rate") is not None:
            print(
                f"Unknown inputs: {metrics['test_unknown_rate']:.1%} of the test images are called none of the classes"
            )
        from app.core.trust import fidelity_warnings
        from app.store import read_metadata_quietly

        for sentence in fidelity_warnings(read_metadata_quietly(done["model_dir"]).fidelity):
            _warn(sentence)
        print("Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in done["seconds"].items()))
    return 0


def cmd_review(args) -> int:
    if classify_only():
        raise UsageError("this build classifies only; install the full Retrain Studio to review data")
    if os.environ.get("RETRAIN_STUDIO_NICE", "").isdigit():  # the GUI's child: yield the CPU to the window
        os.nice(int(os.environ["RETRAIN_STUDIO_NICE"]))
    from app.core import events
    from app.core.review import review_folder

    if (
        not 0 <= args.validation_percent < 100
        or not 0 <= args.test_percent < 100
        or args.validation_percent + args.test_percent >= 100
    ):
        raise UsageError(
            "--validation-percent and --test-percent must be between 0 and 100 and add up to less than 100"
        )
    sources = _sources(args)
    report = review_folder(
        sources,
        args.backbone,
        args.cache_dir,
        validation_percent=args.validation_percent,
        test_percent=args.test_percent,
        trust_backbone=args.trust_backbone,
        on_event=events.json_lines() if args.json else _human_events(),
    )
    if not args.json:
        print_review(report, sources[0].root())
    return 0


def print_review(report: dict, root: Path, limit: int = 15) -> None:
    """The review as a short ranked report: the most suspicious of each kind, with counts."""

    def rel(path: str) -> str:
        try:
            return printable(Path(path).relative_to(root))
        except ValueError:
            return printable(path)

    issues, groups, outliers = report["label_issues"], report["duplicates"], report["outliers"]
    leaks = sum(g["leak"] for g in groups)
    print(
        f"Reviewed {report.get('images', '?')} images in {report['seconds'].get('total', 0):.1f} s: "
        f"{len(issues)} likely wrong label{'s' * (len(issues) != 1)}, {len(groups)} duplicate "
        f"group{'s' * (len(groups) != 1)} ({leaks} leak{'s' * (leaks != 1)} between splits), "
        f"{len(outliers)} outlier{'s' * (len(outliers) != 1)}."
    )
    if issues:
        print("\nLikely wrong labels (most suspicious first):")
        for row in issues[:limit]:
            print(
                f"  {row['score']:.2f}  {rel(row['path'])}  is '{printable(row['given'])}', "
                f"looks like '{printable(row['suggested'])}'"
            )
    if groups:
        print("\nDuplicates (leaks first):")
        for group in groups[:limit]:
            kind = "identical" if group.get("exact") else f"similarity {group['similarity']:.2f}"
            print(
                f"  {'LEAK ' if group['leak'] else ''}{kind}: "
                + ", ".join(f"{rel(p)} ({s})" for p, s in zip(group["paths"], group["splits"]))
            )
    if outliers:
        print("\nOutliers (far from every other image):")
        for row in outliers[:limit]:
            print(f"  {row['score']:.1f}  {rel(row['path'])}")
    hidden = sum(max(0, len(rows) - limit) for rows in (issues, groups, outliers))
    if hidden:
        print(f"\n... and {hidden} more (review --json lists all)")


def _human_events():
    """Readable progress on stderr for people (the --json form is for programs)."""
    last = {}

    def emit(event: dict) -> None:
        kind = event["event"]
        if kind == "stage":
            print(f"[{event['stage']}] {printable(event['message'])}", file=sys.stderr)
        elif kind == "progress":
            done, total = event["done"], event["total"]
            if total and (done == total or done - last.get(event["stage"], -(10**9)) >= max(1, total // 10)):
                last[event["stage"]] = done
                print(f"  {event['stage']}: {done}/{total}", file=sys.stderr)
        elif kind == "dataset":
            print(
                f"  {event['images']} images in {len(event['classes'])} classes "
                f"(train {event['train']}, validation {event['validation']}, test {event['test']}); "
                f"{event['skipped_count']} skipped",
                file=sys.stderr,
            )
            for item in event["skipped"][:20]:
                print(f"  skipped {printable(item['path'])}: {printable(item['reason'])}", file=sys.stderr)
            if len(event["skipped"]) > 20:
                print(f"  ... and {len(event['skipped']) - 20} more skipped (train --json lists all)", file=sys.stderr)
        elif kind == "review":  # one line; `review` then prints the ranked list on stdout
            print(
                f"  review: {len(event['label_issues'])} likely wrong labels, {len(event['duplicates'])} duplicate "
                f"groups ({sum(g['leak'] for g in event['duplicates'])} leaks), {len(event['outliers'])} outliers; "
                "run `retrain-studio review` for the list",
                file=sys.stderr,
            )
        elif kind == "warning":
            print(f"  warning: {printable(event['message'])}", file=sys.stderr)
        elif kind == "epoch" and event["epoch"] % 10 == 0:
            print(
                "  epoch {epoch}: loss {loss:.3f} accuracy {accuracy:.3f}".format(**event)
                + (" val_accuracy {:.3f}".format(event["val_accuracy"]) if "val_accuracy" in event else ""),
                file=sys.stderr,
            )

    return emit


def cmd_backbones(args) -> int:
    from app.core.backbones import list_backbones

    rows = list_backbones()
    if args.json:
        for info in rows:
            print(json.dumps(info.to_dict()))
        return 0
    for info in rows:
        print(
            f"{info.id}\n    {info.description}; input {info.image_size}px; "
            f"{'works offline' if info.offline else 'needs internet'}"
        )
    return 0


def cmd_classify(args) -> int:
    if args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    found = _image_files(args.paths)
    if not any(f.reason is None for f in found):
        raise UsageError(
            "no image files found in the given paths"
            + (f" ({len(found)} skipped, e.g. {printable(found[0].path)}: {found[0].reason})" if found else "")
        )
    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    from app.inference.base import Prediction
    from app.inference.bench import summary
    from app.inference.factory import open_classifier
    from app.inference.pipeline import classify_files

    classifier = open_classifier(args.model, args.backend, args.server, **_backend_options(args, bool(args.server)))
    _warn_fidelity(classifier)
    if args.server:
        _batched(classifier, args.batch)
    tried_paths = [entry.path for entry in found if not entry.reason]
    answers = classify_files(classifier, tried_paths, batch=args.batch, top_k=args.top_k)
    bar = _progress_bar(len(tried_paths), args.progress or (not args.json and sys.stderr.isatty()))
    out = (lambda line: bar.write(line, file=sys.stdout)) if bar is not None else print  # noqa: E731
    totals, skipped, unknowns = [], 0, 0
    for entry in found:
        path = entry.path
        if entry.reason:  # found while searching a folder but not tried: same row, "skipped" true
            skipped += 1
            prediction = Prediction(error=entry.reason)
        else:
            prediction = next(answers)
            if bar is not None:
                bar.update(1)
        if prediction.error is None:
            totals.append(prediction.timings.total_ms)
            unknowns += bool(prediction.unknown)
        if args.json:
            print(
                json.dumps(
                    {
                        "path": str(path),
                        "label": prediction.label,
                        "score": prediction.score,
                        "top_k": [{"label": label, "score": s} for label, s in prediction.top_k],
                        "timings": prediction.timings.to_dict(),
                        "request_bytes": prediction.request_bytes,
                        "backend": classifier.name,
                        "unknown": prediction.unknown,
                        "ood_score": prediction.ood_score,
                        "error": prediction.error,
                        "skipped": bool(entry.reason),
                    }
                ),
                flush=True,
            )
        elif entry.reason:
            out(f"{printable(path)}  skipped: {printable(entry.reason)}")
        elif prediction.error:
            out(f"{printable(path)}  error: {printable(prediction.error)}")
        elif prediction.unknown:  # none of the model's classes: said first, the closest class after it
            out(
                f"{printable(path)}  {'UNKNOWN':<20} {prediction.score:.3f}  {prediction.timings.total_ms:7.1f} ms"
                f"  (none of the classes; closest: {printable(prediction.label)}, ood score {prediction.ood_score:.3f})"
            )
        else:
            out(
                f"{printable(path)}  {printable(prediction.label):<20} {prediction.score:.3f}  "
                f"{prediction.timings.total_ms:7.1f} ms"
            )
    if bar is not None:
        bar.close()
    if not args.json:
        tried = len(found) - skipped
        stats = summary(totals)
        print(
            f"{len(totals)} classified ({unknowns} unknown), {tried - len(totals)} failed, {skipped} skipped "
            f"with {classifier.name}"
            + (f"; total ms mean {stats['mean']:.1f}, median {stats['median']:.1f}" if totals else "")
        )
    return 0


def _warn_fidelity(classifier) -> None:
    """Say on stderr when the local file being used answered unlike the trained model at export (metadata.json)."""
    from app.core.trust import artifact_name, fidelity_warnings

    metadata = getattr(classifier, "metadata", None)
    if metadata is None:  # a server: its files were checked where they were exported
        return
    model_file = getattr(classifier, "model_file", None)
    for sentence in fidelity_warnings(
        metadata.fidelity, artifact_name(classifier.name, model_file and model_file.name)
    ):
        _warn(sentence)


def cmd_explain(args) -> int:
    if classify_only():
        raise UsageError("this build has no TensorFlow, which explaining needs; install the full Retrain Studio")
    from app.core.explain import explain

    found = _image_files(args.images)
    files = [f.path for f in found if f.reason is None]
    if not files:
        raise UsageError("no image files found in the given paths")
    for row in explain(args.model, files, args.out_dir):
        if args.json:
            print(json.dumps(row), flush=True)
        elif row["error"]:
            print(f"{printable(row['path'])}  error: {printable(row['error'])}")
        else:
            said = "UNKNOWN (closest: " + printable(row["label"]) + ")" if row["unknown"] else printable(row["label"])
            print(f"{printable(row['path'])}  {said} {row['score']:.3f}  -> {printable(row['png'])}")
    for entry in found:
        if entry.reason:
            print(f"{printable(entry.path)}  skipped: {printable(entry.reason)}", file=sys.stderr)
    return 0


def cmd_serve_config(args) -> int:
    from app.core.serving_config import find_models, models_config, write_batching_parameters, write_models_config

    names = find_models(args.models_dir)
    if not names:
        raise UsageError(f"no exported models under {args.models_dir} (expected NAME/VERSION/saved_model.pb)")
    if args.stdout:
        print(models_config({n: f"{args.container_root}/{n}" for n in names}), end="")
    else:
        if args.batch_threads is not None and not 1 <= args.batch_threads <= 4096:
            raise UsageError("--batch-threads must be between 1 and 4096")
        written = Path(args.models_dir) / "models.config"
        try:
            path = write_models_config(args.models_dir, args.container_root)
            written = Path(args.models_dir) / "batching_parameters.txt"
            batching = write_batching_parameters(args.models_dir, args.batch_threads)
        except OSError as exc:  # a folder named models.config, a read-only or full disk
            raise ValueError(f"cannot write {printable(written)} ({exc.strerror or type(exc).__name__})") from None
        print(f"{path}: {len(names)} model{'s' if len(names) != 1 else ''} ({', '.join(names)})")
        print(f"{batching}: a starting point for --enable_batching --batching_parameters_file (see its comments)")
    return 0


def cmd_bench(args) -> int:
    from app.inference.bench import bench, labeled_files
    from app.inference.factory import open_classifier

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for backend in backends:
        if backend not in LOCAL_BACKENDS and "://" not in backend:
            raise UsageError(f"unknown backend '{backend}' (use tflite, savedmodel or a server URL)")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if not Path(args.test_dir).expanduser().is_dir():
        raise UsageError(f"no such folder: {args.test_dir}")
    load = _load_settings(args)
    skipped: list = []
    files = labeled_files(args.test_dir, args.limit, skipped)
    if not files:
        raise UsageError(f"no images found under {args.test_dir}")
    if load is not None:
        return _bench_load(args, backends, files, load)
    rows = []
    for backend in backends:
        remote = "://" in backend
        classifier = open_classifier(
            None if remote else args.model, backend, backend if remote else None, **_backend_options(args, remote)
        )
        row = {**bench(classifier, files, backend), "skipped_files": len(skipped)}
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if not args.json:
        print(f"{len(files)} images from {printable(args.test_dir)}; times in ms per image (median / p95)")
        print(
            f"{'backend':<40} {'acc':>6} {'unkn':>6} {'preprocess':>14} {'inference':>14} {'total':>14} "
            f"{'bytes':>10} {'img/s':>7}"
        )
        for r in rows:
            cell = lambda s: f"{s['median']:.2f} / {s['p95']:.2f}" if s["median"] is not None else "-"  # noqa: E731
            acc = f"{r['accuracy']:.3f}" if r["accuracy"] is not None else "-"
            unknown = f"{r['unknown_rate']:.3f}" if r.get("unknown_rate") is not None else "-"
            print(
                f"{printable(r['backend'])[:40]:<40} {acc:>6} {unknown:>6} {cell(r['preprocess_ms']):>14} "
                f"{cell(r['inference_ms']):>14} {cell(r['total_ms']):>14} {r['request_bytes_mean'] or 0:>10.0f} "
                f"{r['images_per_s'] or 0:>7.1f}"
            )
        for found in skipped[:10]:
            print(f"skipped {printable(found.path)}: {printable(found.reason)}")
        if len(skipped) > 10:
            print(f"... and {len(skipped) - 10} more files skipped")
        for r in rows:
            if r["errors"]:
                print(
                    f"{printable(r['backend'])}: {r['errors']} of {r['images']} images failed, e.g. "
                    + "; ".join(f"{printable(f['path'])}: {printable(f['error'])}" for f in r["failures"][:3])
                )
    if args.csv:
        columns = ["backend", "images", "errors", "accuracy"]
        columns += [f"{k}_{s}" for k in ("preprocess_ms", "inference_ms", "network_ms", "total_ms") for s in STATS]
        columns += ["request_bytes_mean", "images_per_s"]
        flat = [{**r, **{f"{k}_{s}": r[k][s] for k in columns_of(r) for s in STATS}} for r in rows]
        _write_csv(args.csv, columns, flat)
    return 0


STATS = ("mean", "median", "p95", "min", "max")


def columns_of(row: dict) -> list[str]:
    """The timing summaries in a bench row (the keys holding ``summary`` dicts)."""
    return [k for k, v in row.items() if isinstance(v, dict) and set(v) == set(STATS)]


def _load_settings(args):
    """The sweep's LoadSettings when any load flag is given, else None (the one-image-at-a-time bench)."""
    if all(getattr(args, name) is None for name in LOAD_FLAGS):
        return None
    from app.inference.bench import LoadSettings

    try:
        levels = tuple(int(c) for c in (args.concurrency or "1").split(",") if c.strip())
    except ValueError:
        raise UsageError(f"--concurrency takes whole numbers separated by commas, not {args.concurrency!r}") from None
    if args.duration is not None and not 0 < args.duration <= 3600:
        raise UsageError("--duration must be between 0 and 3600 seconds")
    if any(c > 256 for c in levels):
        raise UsageError("--concurrency levels above 256 would open too many classifiers")
    try:
        return LoadSettings(
            concurrency=levels,
            batch=1 if args.batch is None else args.batch,
            duration_s=args.duration,
            count=args.count,
            warmup=args.warmup,
            max_windows=10 if args.max_windows is None else args.max_windows,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _bench_load(args, backends: list[str], files: list, load) -> int:
    """``bench`` as a load generator: each backend through every concurrency level (``bench.sweep``)."""
    from app.inference.bench import CSV_COLUMNS, load_payloads, sweep
    from app.inference.factory import open_classifier

    payloads, unreadable = load_payloads(files, args.limit or 256)
    if not payloads:
        raise UsageError(f"none of the images under {args.test_dir} can be read")
    if not args.json:
        window = f"{load.duration_s:g} s" if load.count is None else f"{load.count} requests"
        print(
            f"Load sweep: {len(payloads)} images cycled, {load.batch} per request, windows of {window} "
            f"(at most {load.max_windows}); latency per request in ms",
            flush=True,
        )
        print(
            f"{'backend':<40} {'conc':>4} {'img/s':>8} {'req/s':>8} {'p50':>8} {'p90':>8} {'p95':>8} {'p99':>8} "
            f"{'max':>8}  client split ms (mean per request)",
            flush=True,
        )
    rows = []

    def show(row: dict) -> None:
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
            return
        number = lambda v: f"{v:8.2f}" if v is not None else f"{'-':>8}"  # noqa: E731
        if remote:
            split = f"encode {row['preprocess_ms'] or 0:.2f} / network+server {row['network_ms'] or 0:.2f} / reply "
            split += f"{row['reply_ms'] or 0:.2f}"
        else:
            split = f"decode+resize {(row['decode_ms'] or 0) + (row['preprocess_ms'] or 0):.2f} / inference "
            split += f"{row['inference_ms'] or 0:.2f}"
        notes = [] if row["stable"] else [f"not stable after {row['windows']} windows"]
        if row["errors"]:
            notes.append(f"{row['errors']} of {row['requests']} requests failed: {row['error_examples'][0]}")
        print(
            f"{printable(row['backend'])[:40]:<40} {row['concurrency']:>4} {number(row['images_per_s'])} "
            f"{number(row['requests_per_s'])} {number(row['p50_ms'])} {number(row['p90_ms'])} "
            f"{number(row['p95_ms'])} {number(row['p99_ms'])} {number(row['max_ms'])}  {split}"
            + "".join(f"\n    {printable(n)}" for n in notes),
            flush=True,
        )

    for backend in backends:
        remote = "://" in backend
        options = _backend_options(args, remote)
        if remote:  # one request carries the whole batch, as a client of a batching server would send it
            opener = lambda url=backend, o=options: _batched(open_classifier(server=url, **o), load.batch)  # noqa: E731
        else:
            opener = lambda name=backend, o=options: open_classifier(args.model, name, **o)  # noqa: E731
        sweep(opener, payloads, load, backend, on_level=show)
    if not args.json and unreadable:
        print(f"{len(unreadable)} files could not be read, e.g. {printable(unreadable[0]['path'])}")
    if args.csv:
        _write_csv(args.csv, list(CSV_COLUMNS), rows)
    return 0


def _progress_bar(total: int, show: bool):
    """A tqdm bar on stderr for people (None when not shown): files done, rate and time left."""
    if not show:
        return None
    import shutil

    from tqdm import tqdm

    width = shutil.get_terminal_size((80, 24)).columns or 80  # a terminal reporting 0 columns would get no bar
    plain = not (sys.stderr.encoding or "").lower().replace("-", "").startswith("utf8")  # block characters or #
    return tqdm(
        total=total, unit="img", file=sys.stderr, ncols=min(width, 120), ascii=plain, leave=False, mininterval=0.2
    )


def _batched(classifier, batch: int):
    """A remote classifier that sends up to ``batch`` images in one request (its ``batch_size``)."""
    classifier.batch_size = max(batch, 1)
    return classifier


def _write_csv(path: str, columns: list[str], rows: list[dict]) -> None:
    """The rows as CSV (only ``columns``), written atomically."""
    import csv
    import io

    from app.core.atomic import write_bytes

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    try:
        write_bytes(Path(path).expanduser(), buffer.getvalue().encode("utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot write {printable(path)} ({exc.strerror or type(exc).__name__})") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return printable(text)


EVENT_COMMANDS = ("train", "retrain", "review")  # with --json, their failure is also the last line: an error event


class _ParseError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors reach ``main`` first (to be said as an ``error`` event too); subcommand parsers
    are of this class as well."""

    def error(self, message: str):
        raise _ParseError(self, message)


def main(argv: list[str]) -> int:
    """Run one command; a failure is one sentence on stderr and, for train/retrain/review with ``--json``,
    the ``error`` event on stdout, which is how the GUI learns why its child stopped."""
    from app.core import events

    events_wanted = bool(argv) and argv[0] in EVENT_COMMANDS and "--json" in argv

    def fail(message: str, code: int) -> int:
        if events_wanted:
            with contextlib.suppress(OSError):
                events.json_lines()(events.error(message))
        return code

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _ParseError as exc:
        fail(printable(exc), 2)
        argparse.ArgumentParser.error(exc.parser, str(exc))  # usage and the message on stderr, exit 2
    if args.command is None:
        from app.gui import run

        return run(sys.argv[:1])
    _tensorflow_environment()
    handlers = {
        "train": cmd_train,
        "retrain": cmd_retrain,
        "backbones": cmd_backbones,
        "classify": cmd_classify,
        "explain": cmd_explain,
        "bench": cmd_bench,
        "serve-config": cmd_serve_config,
        "review": cmd_review,
    }
    from app.core.backbones import BackboneError
    from app.core.dataset import DatasetError
    from app.inference.base import ModelError

    try:
        return handlers[args.command](args)
    except UsageError as exc:
        print(f"retrain-studio: {printable(exc)}", file=sys.stderr)
        return fail(printable(exc), 2)
    except BrokenPipeError:  # output piped into `head` and the like (an OSError: caught before those)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (DatasetError, BackboneError, ModelError, ValueError, OSError) as exc:
        print(f"retrain-studio: {_one_line(exc)}", file=sys.stderr)
        return fail(_one_line(exc), 1)
    except KeyboardInterrupt:
        print("retrain-studio: cancelled; nothing half-written was kept", file=sys.stderr)
        return fail("cancelled; nothing half-written was kept", 1)
    except Exception as exc:  # last resort: still one line (a traceback only when debugging)
        if os.environ.get("RETRAIN_STUDIO_DEBUG"):
            import traceback

            traceback.print_exc()
        print(f"retrain-studio: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return fail(_one_line(exc), 1)

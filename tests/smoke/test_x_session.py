"""The whole journey of a new user, in the real app on a real X server, by keyboard and mouse only.

Xvfb + openbox + ``retrain-studio`` (the venv's console script) with HOME and every XDG folder in a
temporary directory. xdotool presses keys, types and clicks; ImageMagick screenshots each screen to
$RETRAIN_STUDIO_SMOKE_SHOTS (a temporary folder by default). What is on screen is read from the app's
UI log (RETRAIN_STUDIO_UI_LOG, app/gui/qt_probe.py) and from the files the app writes. A step fails
when its expected text does not appear in time; the test fails on any failed step, a crash (the app is
restarted so later steps still run and are reported), or a traceback or a Qt wrong-thread warning in the
app's stderr. It prints each step's time and the longest event-loop gap (RETRAIN_STUDIO_WATCHDOG=1).
"""

from __future__ import annotations

import csv
import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from xsession import App, Display, StepFailed, missing_packages, wait_for

REPO = Path(__file__).resolve().parents[2]
BAG = REPO / "resources" / "sample_data" / "bag"
BACKENDS = ["Local TFLite", "Local SavedModel", "Remote gRPC", "Remote REST"]
MAIN = r"^Retrain Studio$"

pytestmark = pytest.mark.thorough  # the real process on a real X server: CI's run, not the quick one


@pytest.fixture(scope="module")
def display():
    missing = missing_packages()
    if missing:
        message = f"the X smoke test needs apt-get install {' '.join(missing)} (.ci/run installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with Display() as session:
        yield session


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("RETRAIN_STUDIO_SMOKE_SHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Journey:
    """Runs named steps; a failed step is recorded (with its screenshot) and the journey goes on."""

    def __init__(self, display: Display, app: App, shots: Path):
        self.x, self.app, self.shots = display, app, shots
        self.results: list[tuple[str, str, float, float]] = []  # name, outcome, seconds, longest gap (ms)
        self.count = 0
        self.logs = []
        self.seen_problems = 0  # tracebacks and thread warnings already reported

    @property
    def longest_gap(self) -> float:
        """The longest event-loop stall over every run of the app (ms)."""
        return max((log.longest_stall_ms for log in self.logs), default=0.0)

    @property
    def ui(self):
        return self.app.ui

    def step(self, name: str, action, needed: bool = False, restart: bool = True, shot: bool = True) -> bool:
        self.count += 1
        self.name, self.shot_taken = name, False
        start, outcome = time.monotonic(), "ok"
        if self.logs:
            self.ui.recent_stall_ms = 0.0
        try:
            action()
        except StepFailed as exc:
            outcome = f"FAILED: {exc}"
        problems = self.app.problems()
        if len(problems) > self.seen_problems and outcome == "ok":
            outcome = f"FAILED: in the app's stderr: {problems[self.seen_problems :]}"
        self.seen_problems = len(problems)
        if outcome != "ok":
            self.shot("failed")
        elif not self.shot_taken and shot:
            self.shot()
        if self.logs:
            self.ui.poll()
        gap = self.ui.recent_stall_ms if self.logs else 0.0
        self.results.append((name, outcome, time.monotonic() - start, gap))
        print(f"{name}: {outcome} ({time.monotonic() - start:.1f} s, longest gap {gap:.0f} ms)", flush=True)
        if restart and self.app.process.poll() is not None:  # crashed: start again so later steps still run
            self.seen_problems = 0
            self.start_app()
        if outcome != "ok" and needed:
            raise StepFailed(f"{name} is needed by every later step: {outcome}")
        return outcome == "ok"

    def shot(self, label: str = "") -> None:
        """Screenshot the whole screen as NN-step[-label].png."""
        self.x.screenshot(self.shots / f"{self.count:02d}-{self.name}{'-' + label if label else ''}.png")
        self.shot_taken = True

    def start_app(self) -> None:
        self.logs.append(self.app.start())
        wait_for(self.app, "the main window", lambda: self.ui.find("window", window=MAIN), 30)
        self.settle()

    def settle(self, seconds: float = 0.3) -> None:
        """Let two probe walks (100 ms each) catch up with what the last input changed."""
        time.sleep(seconds)
        self.ui.poll()

    # --- looking and acting -----------------------------------------------------------
    def wait(self, what: str, timeout: float = 30, **query) -> dict:
        return wait_for(self.app, what, lambda: self.ui.find(**query), timeout)[0]

    def button(self, text: str, timeout: float = 15, window: str | None = None, enabled: bool = True) -> dict:
        """A visible button whose text matches; waits until it is enabled."""
        return self.wait(
            f"an enabled button {text!r}", timeout, kind="button", text=text, window=window, enabled=enabled
        )

    def press(self, text: str, timeout: float = 15, window: str | None = None) -> None:
        """Click a button once it stands still (a banner appearing or fading moves the layout)."""
        where = None
        for _ in range(20):
            found = self.button(text, timeout, window)
            if (found["x"], found["y"], found["w"], found["h"]) == where:
                break
            where = (found["x"], found["y"], found["w"], found["h"])
            self.settle(0.25)
        self.x.click(found)

    def page(self, title: str, timeout: float = 15) -> dict:
        return self.wait(f"the wizard page {title!r}", timeout, kind="page", text=title)


@pytest.fixture
def serving_double(tmp_path):
    """Starts tests/serving/double.py in its own process once a model exists; stopped at the end."""
    processes = []

    def start(name: str, model: Path) -> subprocess.Popen:
        with (tmp_path / "double.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, str(REPO / "tests/serving/double.py"), f"{name}={model}"],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=REPO,
            )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)
        process.stdout.close()


@pytest.mark.timeout(420)
def test_new_user_journey_under_x(display, shots, tmp_path, cache_dir, serving_double):
    started = time.monotonic()
    home = tmp_path / "home"
    home.mkdir()
    app = App(display, home, tmp_path, {"RETRAIN_STUDIO_CACHE": str(cache_dir)})
    journey = Journey(display, app, shots)
    aborted = ""
    try:
        journey.step("start", journey.start_app, needed=True, shot=False)
        walk(journey, tmp_path, home, serving_double)
    except StepFailed as exc:  # a step that every later one needs
        aborted = f"journey stopped: {exc}"
    finally:
        app.stop()
    report = "\n".join(
        f"  {name:<16} {seconds:5.1f} s  gap {f'{gap:.0f}' if gap else '<100':>4} ms  {outcome}"
        for name, outcome, seconds, gap in journey.results
    )
    print(
        f"\nX smoke journey: {time.monotonic() - started:.0f} s, longest event-loop gap {journey.longest_gap:.0f} ms"
        f", screenshots in {shots}\n{report}"
    )
    failed = [f"{name}: {outcome}" for name, outcome, *_ in journey.results if outcome != "ok"]
    assert not failed and not aborted, "\n".join(failed + [aborted])


def walk(j: Journey, tmp_path: Path, home: Path, serving_double) -> None:
    x = j.x
    found: dict = {}

    # --- Train: the wizard, from the bundled sample to an exported model --------------
    def choose_sample():
        x.key("ctrl+t")
        j.page("Choose|photos|folder")
        j.press("^Use sample data$")
        j.wait("the sample folder in the folder field", kind="edit", text=r"sample_data$")
        j.shot()
        j.press(r"^Next")

    def review():
        j.page("Review")
        j.wait("the image count of the sample", 30, kind="label", text=r"120 images in 4 classes")
        j.settle(1.0)  # example thumbnails
        j.shot()
        j.press(r"^Next")

    def options():
        j.page("option")
        j.wait("the model name from the folder", kind="edit", text=r"^sample_data$")
        j.shot()
        j.press(r"^(Train|Next)")

    def training():
        j.page("Training")
        try:  # one look while it runs (the stage texts may change; only the end is required)
            wait_for(j.app, "a stage", lambda: j.ui.find("label", text=r"^(Computing|Training the)"), 60)
            j.shot("running")
        except StepFailed:
            pass
        wait_for(
            j.app,
            "the end of training (Next enabled or a failure)",
            lambda: j.ui.find("button", text=r"^Next", enabled=True) or j.ui.find("label", text=r"^Failed"),
            180,
        )
        failure = j.ui.find("label", text=r"^Failed")
        if failure:
            raise StepFailed(failure[0]["text"])
        j.shot("done")
        versions = sorted(home.rglob("sample_data/1/saved_model.pb"))
        if not versions:
            raise StepFailed(f"training finished but no sample_data/1/saved_model.pb under {home}")
        found["version"] = versions[0].parent

    def results():
        j.press(r"^Next")
        j.page("Results")
        j.wait("the test accuracy", kind="label", text=r"(?i)accuracy\D{0,12}\d+(\.\d+)?\s?%")
        j.settle(1.0)  # thumbnails

    def export():
        j.press(r"^Next")
        j.page("ready")
        j.wait("the version folder", kind="label", text=re.escape(str(found["version"])))
        found["double"] = serving_double("sample_data", found["version"].parent)  # loads while we classify

    def first_launch():  # issue 8: with no models the app opens on Train with a "start here"
        j.shot()
        j.wait("the Train page on first launch", 2, kind="page")

    j.step("first-launch", first_launch)
    j.step("train-folder", choose_sample, needed=True)
    j.step("train-review", review, needed=True)
    j.step("train-options", options, needed=True)
    j.step("training", training, needed=True)
    j.step("train-results", results)
    j.step("train-export", export, needed=True)

    def finish():  # the model goes to Classify; Finish starts the wizard over
        j.press("^Classify with this model$")
        j.wait("the model in the backend bar", kind="edit", text=rf"^{re.escape(str(found['version']))}/?$")
        j.settle()
        j.shot("classify")
        x.key("ctrl+1")
        j.page("ready")
        j.press("^(Finish|Train another)$")
        j.page("Choose|photos|folder")

    j.step("train-finish", finish)

    # --- Classify a folder through the file dialog, export the table ------------------
    images = sorted(p for p in BAG.iterdir() if p.suffix.lower() == ".png")

    def answer_file_dialog(shortcut: str, what: str, title: str, path: Path) -> None:
        """Open a file dialog by its shortcut, type ``path`` into it, press Enter, wait for it to close."""
        x.key(shortcut)
        dialog = j.wait(f"the {what} dialog", kind="window", window=title, modal=True)
        j.settle(0.5)
        typed = f"^{re.escape(str(path))}$"
        for _attempt in range(3):  # the dialog's completer can take typed keys under load (seen in CI): retype
            x.key("ctrl+a")
            x.type(str(path))
            j.settle()
            try:
                wait_for(j.app, "the typed path", lambda: j.ui.find("edit", text=typed, window=title), 3)
                break
            except StepFailed:
                j.shot("mistyped")
        else:
            raise StepFailed(f"the {what} dialog's line never read {path} after typing it three times")
        j.shot("dialog")
        x.key("Return")
        wait_for(
            j.app, f"the {what} dialog closing", lambda: not j.ui.find("window", window=re.escape(dialog["window"]))
        )

    def classify_folder():
        x.key("ctrl+2")
        j.settle()
        answer_file_dialog("ctrl+shift+o", "folder", r"(?i)folder", BAG)
        j.wait(
            f"{len(images)} images classified",
            60,
            kind="label",
            text=rf"(?i)\b{len(images)}\b[^·]*classified|classified\D{{0,12}}\b{len(images)}\b",
        )
        j.settle()
        j.shot()

    def export_csv():
        target = tmp_path / "results.csv"
        answer_file_dialog("ctrl+e", "export", r"(?i)export", target)
        wait_for(j.app, "the CSV file", target.exists, 10)
        rows = list(csv.DictReader(target.open(encoding="utf-8")))
        if len(rows) != len(images):
            raise StepFailed(f"the CSV has {len(rows)} rows for {len(images)} images")
        errors = [r["error"] for r in rows if r.get("error")]
        if errors:
            raise StepFailed(f"{len(errors)} rows failed, e.g. {errors[0]}")
        bags = sum(r["label"] == "bag" for r in rows)
        if bags < 0.8 * len(rows):
            raise StepFailed(f"only {bags} of {len(rows)} bag images were labelled bag")

    j.step("classify-folder", classify_folder)
    j.step("export-csv", export_csv)

    # --- Compare backends: all four, remote ones against the TF Serving double --------
    def compare():
        double = found["double"]  # it prints its ports once its model is loaded
        ready = select.select([double.stdout], [], [], 90)[0]
        ports = json.loads(double.stdout.readline() or "{}") if ready else {}
        if "grpc_port" not in ports:
            raise StepFailed("the TF Serving double did not start (see double.log)")
        urls = {
            "Remote gRPC": f"grpc://127.0.0.1:{ports['grpc_port']}/sample_data",
            "Remote REST": f"http://127.0.0.1:{ports['rest_port']}/v1/models/sample_data",
        }
        x.key("ctrl+2")
        j.settle()
        j.press("^Compare backends", window=MAIN)
        window = re.escape(j.wait("the Compare backends dialog", kind="window", window="Compare")["window"])
        j.settle()
        for name in BACKENDS:
            box = j.wait(f"the {name} check box", kind="checkbox", text=f"^{name}$", window=window)
            if not box["checked"]:
                x.click(box)
            if name in urls:  # the address field beside the check box: click, select all, type
                edit = min(
                    j.ui.find("edit", window=window), key=lambda e: abs(e["y"] + e["h"] / 2 - box["y"] - box["h"] / 2)
                )
                x.click(edit)
                x.key("ctrl+a")
                x.type(urls[name])
        j.settle()
        unticked = [b["text"] for b in j.ui.find("checkbox", window=window) if not b["checked"]]
        j.shot("ticked")
        if unticked:
            raise StepFailed(f"still unticked: {unticked}")
        j.press("^Run$", window=window)

        def table():  # a row per backend, and the run over (Run enabled again)
            rows = {r["cells"][0]: r["cells"] for r in j.ui.find("row", window=window) if r["cells"][1:2] != [""]}
            return (
                set(BACKENDS) <= set(rows) and j.ui.find("button", text="^Run$", window=window, enabled=True) and rows
            )

        rows = wait_for(j.app, "a result row for each of the four backends", table, 120)
        bad = [
            f"{name}: {' '.join(cells[1:])}"
            for name, cells in rows.items()  # the image count and a time
            if str(len(images)) not in cells or not any(re.fullmatch(r"\d+\.\d+", c) for c in cells)
        ]
        j.shot("results")
        x.key("Escape")
        wait_for(j.app, "the Compare dialog closing", lambda: not j.ui.find("window", window=window), 10)
        if bad:
            raise StepFailed("not every image went through every backend: " + "; ".join(bad))

    j.step("compare-backends", compare)

    # --- Models: delete the version through the confirm dialog, into the trash --------
    def models_page():
        x.key("ctrl+3")
        j.wait("the model in the Models list", kind="item", text=r"^sample_data( \||$)")
        j.wait("its version 1", kind="item", text=r"^version 1 \|")

    def delete_version():
        version = Path(found["version"])
        x.click(j.wait("the version 1 row", kind="item", text=r"^version 1 \|"))
        j.wait("version 1 selected", kind="item", text=r"^version 1 \|", selected=True)
        j.press("^Delete version", window=MAIN)
        try:
            dialog = j.wait("a confirm dialog", 5, kind="window", modal=True)
        except StepFailed:
            gone = "" if version.exists() else f"; {version} was deleted without asking"
            raise StepFailed("no confirm dialog appeared after Delete version…" + gone) from None
        window = re.escape(dialog["window"])
        j.wait(
            "the dialog naming what will be deleted",
            kind="label",
            window=window,
            text=rf"{re.escape(str(version))}|sample_data.*version 1|version 1.*sample_data",
        )
        j.shot("confirm")
        if not version.exists():
            raise StepFailed(f"{version} was deleted before the user confirmed")
        j.press(r"(?i)^(delete|move to trash|yes|ok)", window=window)
        wait_for(j.app, "the version folder leaving the models folder", lambda: not version.exists(), 10)
        wait_for(j.app, "the Models list without version 1", lambda: not j.ui.find("item", text=r"^version 1 \|"), 10)
        trash = home / ".local/share/Trash/files"
        if not [p for p in trash.glob("*") if (p / "saved_model.pb").exists()]:
            raise StepFailed(f"the deleted version is not in the trash ({trash})")
        j.shot("deleted")

    j.step("models", models_page)
    j.step("delete-version", delete_version)

    def quit_app():
        x.key("ctrl+q")
        deadline = time.monotonic() + 15
        while j.app.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if j.app.process.poll() is None:
            raise StepFailed("the app did not quit on Ctrl+Q")
        if j.app.process.returncode != 0:
            raise StepFailed(f"the app quit with exit code {j.app.process.returncode}")

    j.step("quit", quit_app, restart=False, shot=False)

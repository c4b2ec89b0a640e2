"""Render resources/icons/retrain-studio.svg to the freedesktop hicolor PNG sizes.

QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/linux/render_icons.py
"""

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICONS = Path(__file__).resolve().parents[2] / "resources" / "icons"


def render() -> list[Path]:
    app = QGuiApplication.instance() or QGuiApplication([])  # noqa: F841 (Qt needs one)
    renderer = QSvgRenderer(str(ICONS / "retrain-studio.svg"))
    written = []
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        target = ICONS / "hicolor" / f"{size}x{size}" / "apps" / "retrain-studio.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(str(target))
        written.append(target)
    scalable = ICONS / "hicolor" / "scalable" / "apps" / "retrain-studio.svg"
    scalable.parent.mkdir(parents=True, exist_ok=True)
    scalable.write_bytes((ICONS / "retrain-studio.svg").read_bytes())
    return written + [scalable]


if __name__ == "__main__":
    for path in render():
        print(path)

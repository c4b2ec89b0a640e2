#!/usr/bin/env bash
# Build the desktop bundle with PyInstaller, then smoke-test it and print its size.
#   packaging/build.sh            full app (train + classify)  -> dist/retrain-studio/
#   packaging/build.sh classify   classification only, no TF    -> dist/retrain-studio-classify/
set -euo pipefail
cd "$(dirname "$0")/.."
variant="${1:-full}"
python="${PYTHON:-.venv/bin/python}"
"$python" -m pip install -q "pyinstaller>=6.10"
export RETRAIN_STUDIO_VARIANT="$variant"
start=$(date +%s)
"$python" -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller-"$variant" \
  packaging/retrain-studio.spec
name=retrain-studio; [ "$variant" = classify ] && name=retrain-studio-classify
unset RETRAIN_STUDIO_VARIANT
"dist/$name/retrain-studio" --version
echo "built dist/$name in $(( $(date +%s) - start )) s; size $(du -sh "dist/$name" | cut -f1)"

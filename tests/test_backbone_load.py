"""backbones.load turns whatever the loader raises into one BackboneError sentence."""

from __future__ import annotations

import pytest

from app.core import backbones


@pytest.mark.parametrize("source, words", [("hub", "could not download"), ("local", "could not load backbone")])
def test_a_loader_error_without_a_message_is_still_one_sentence(monkeypatch, tmp_path, source, words):
    hub = pytest.importorskip("tensorflow_hub")

    def fail(location):
        raise RuntimeError()  # str() is "": its first line used to be an IndexError, the run's crash

    monkeypatch.setattr(hub, "load", fail)
    info = backbones.BackboneInfo(str(tmp_path), source, 224, "test backbone", offline=source == "local")
    with pytest.raises(backbones.BackboneError, match=f"{words} .*: RuntimeError$"):
        backbones.load(info)

# PyInstaller runtime hook of the classification-only bundle (no TensorFlow inside).
# The official TF Serving stubs import TensorFlow's *_pb2 protocol modules; the bundle
# carries just those files, under a bare "tensorflow" package whose __init__ is never
# run, so the gRPC backend works without TensorFlow.
import os
import sys
import types

_root = os.path.join(sys._MEIPASS, "tfprotos", "tensorflow")
_stub = types.ModuleType("tensorflow")
_stub.__path__ = [_root]
sys.modules["tensorflow"] = _stub
os.environ["RETRAIN_STUDIO_VARIANT"] = "classify"

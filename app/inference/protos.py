"""TF Serving's official protobuf modules, imported without importing TensorFlow.

tensorflow-serving-api's modules import TensorFlow's own protos (``tensorflow.core.framework.tensor_pb2``, ...),
and Python imports a package before any module inside it: so the first gRPC call used to import all of
TensorFlow, 3-4 s and some 550 MB for a client that only speaks the protocol (``classify --server grpc://...``
took 3.6-4.7 s and 595 MB, against REST's 0.45 s and 43 MB).

The protobuf modules only need their own folders' packages, whose ``__init__.py`` files are empty.  ``load``
imports those packages as Python would, minus their parent, and then the modules the ordinary way, under the
import system's locks: ``tensorflow`` itself is never imported nor faked, so a thread importing TensorFlow
meanwhile gets all of it, and a later ``import tensorflow`` reuses these modules.  When TensorFlow is already
imported, or a package cannot be found that way, the modules are imported the ordinary way (and so is
TensorFlow).  The classification-only bundle has no TensorFlow at all and its own bare ``tensorflow`` package
(packaging/hooks/rthook_classify_only.py).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
import types

MODULES = (
    "tensorflow.core.framework.tensor_pb2",
    "tensorflow.core.framework.tensor_shape_pb2",
    "tensorflow.core.framework.types_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.model_service_pb2_grpc",
    "tensorflow_serving.apis.prediction_service_pb2_grpc",
)
PACKAGES = (  # the folders of MODULES and of the TensorFlow protos they import, parents first
    "tensorflow.core",
    "tensorflow.core.example",
    "tensorflow.core.framework",
    "tensorflow.core.protobuf",
    "tensorflow.compiler",
    "tensorflow.compiler.xla",
    "tensorflow.compiler.xla.tsl",
    "tensorflow.compiler.xla.tsl.protobuf",
)

_lock = threading.Lock()
_loaded = False


def load() -> None:
    """Import ``MODULES``, without TensorFlow unless it is already imported.

    Safe to call from any thread and any number of times; afterwards ``from tensorflow_serving.apis import
    predict_pb2`` and ``from tensorflow.core.framework import types_pb2`` find the modules loaded.
    """
    global _loaded
    with _lock:
        if _loaded:
            return
        added = [] if "tensorflow" in sys.modules else _add_packages()
        try:
            for name in MODULES:
                importlib.import_module(name)
        finally:
            for package in added:  # plain packages again, as Python makes them
                vars(package).pop("__getattr__", None)
        _loaded = True


def _add_packages() -> list[types.ModuleType]:
    """Import ``PACKAGES`` as Python would (found by the path finders, their ``__init__`` run: these are
    empty), but without their parent ``tensorflow``; stop at the first that cannot be found that way.

    Each gets a module ``__getattr__`` (PEP 562) until ``load`` is done: the protos' ``from
    tensorflow.core.framework import tensor_pb2`` asks the package for a module it does not hold yet, and
    Python's own way to import it (``__import__`` of the full name) also imports the top-level ``tensorflow``.
    """
    tensorflow = importlib.util.find_spec("tensorflow")
    if tensorflow is None or not tensorflow.submodule_search_locations:
        return []
    added = []
    for name in PACKAGES:
        if name in sys.modules:
            continue
        parent, _, child = name.rpartition(".")
        where = tensorflow.submodule_search_locations if parent == "tensorflow" else sys.modules[parent].__path__
        spec = importlib.machinery.PathFinder.find_spec(name, list(where))
        if spec is None or spec.submodule_search_locations is None:
            break
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        try:
            spec.loader.exec_module(package)
        except BaseException:
            del sys.modules[name]
            raise
        if parent != "tensorflow":
            setattr(sys.modules[parent], child, package)
        if "__getattr__" not in vars(package):
            package.__getattr__ = _submodule_importer(package)
            added.append(package)
    return added


def _submodule_importer(package: types.ModuleType):
    def submodule(attribute: str) -> types.ModuleType:
        name = f"{package.__name__}.{attribute}"
        if attribute.startswith("__") or importlib.machinery.PathFinder.find_spec(name, package.__path__) is None:
            raise AttributeError(f"module {package.__name__!r} has no attribute {attribute!r}")
        return importlib.import_module(name)

    return submodule

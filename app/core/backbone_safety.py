"""Is a local SavedModel safe to run as a feature extractor?  Read its graph, never run it.

A SavedModel is a program: ``tf.saved_model.load`` and every call run whatever ops its
graph holds, and TensorFlow has ops that read and write files (``ReadFile``,
``WriteFile``, ``ImmutableConst``, dataset readers, summary writers), run Python
(``PyFunc``, ``EagerPyFunc``) or talk to the network (``Rpc``, ``_Send``).  A feature
extractor needs none of them, so the rule is an allow-list: every op in every graph node
and every function of the MetaGraph's FunctionDefLibrary must be pure math, array,
image, variable or control-flow work.  The one exception is the checkpoint saver, whose
``SaveV2``/``RestoreV2`` read the model's own ``variables/``: those ops are allowed only in
the nodes and functions that ``saver_def`` names and that nothing else calls, and the restore
chain (run when a model is loaded) may only read.

The deny patterns only choose the wording of the refusal; the allow-list is the gate.
"""

from __future__ import annotations

import re
from pathlib import Path

PURE_OPS = frozenset(
    """
Const Identity IdentityN NoOp Placeholder PlaceholderWithDefault StopGradient PreventGradient Snapshot
EnsureShape CheckNumerics CheckNumericsV2 Assert
StatefulPartitionedCall PartitionedCall If StatelessIf While StatelessWhile Case StatelessCase
Switch Merge Enter Exit NextIteration LoopCond ControlTrigger
VarHandleOp ReadVariableOp AssignVariableOp AssignAddVariableOp AssignSubVariableOp VarIsInitializedOp
DestroyResourceOp DisableCopyOnRead ResourceGather VariableV2 Variable Assign AssignAdd AssignSub
IsVariableInitialized
Add AddV2 AddN Sub Mul MulNoNan Div DivNoNan RealDiv FloorDiv FloorMod TruncateDiv TruncateMod Mod Neg
Abs Sign Square Sqrt Rsqrt Reciprocal Inv Exp Expm1 Log Log1p Pow Maximum Minimum SquaredDifference
Sin Cos Tan Asin Acos Atan Atan2 Sinh Cosh Tanh Asinh Acosh Atanh Sigmoid Erf Erfc Erfinv Floor Ceil
Round Rint Softplus Softsign Relu Relu6 LeakyRelu Elu Selu Softmax LogSoftmax ClipByValue
IsNan IsInf IsFinite Equal NotEqual Less LessEqual Greater GreaterEqual LogicalAnd LogicalOr LogicalNot
Select SelectV2 Cast Bitcast BitwiseAnd BitwiseOr BitwiseXor Invert LeftShift RightShift
Mean Sum Prod Max Min All Any ArgMax ArgMin Cumsum Cumprod EuclideanNorm
MatMul BatchMatMul BatchMatMulV2 BatchMatMulV3 Einsum
Conv2D Conv3D Conv2DBackpropInput DepthwiseConv2dNative BiasAdd BiasAddV1
FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3 AvgPool AvgPool3D MaxPool MaxPoolV2 MaxPool3D LRN
TopKV2 L2Loss _FusedConv2D _FusedMatMul _FusedBatchNormEx _FusedDepthwiseConv2dNative
Reshape Squeeze ExpandDims Shape ShapeN Size Rank Transpose ConjugateTranspose Pack Unpack Concat ConcatV2
Split SplitV Slice StridedSlice Tile Pad PadV2 MirrorPad Fill ZerosLike OnesLike Range Gather GatherV2
GatherNd ScatterNd TensorScatterUpdate Where Reverse ReverseV2 BroadcastTo BroadcastArgs
BroadcastGradientArgs OneHot LinSpace SpaceToDepth DepthToSpace SpaceToBatchND BatchToSpaceND
MatrixBandPart MatrixDiagV3 MatrixDiagPartV3 Unique
ResizeBilinear ResizeNearestNeighbor ResizeBicubic ResizeArea ScaleAndTranslate CropAndResize
AdjustContrastv2 AdjustSaturation AdjustHue RGBToHSV HSVToRGB ExtractImagePatches
DecodeJpeg DecodePng DecodeImage DecodeBmp DecodeGif ExtractJpegShape
FakeQuantWithMinMaxVars FakeQuantWithMinMaxVarsPerChannel FakeQuantWithMinMaxArgs QuantizeV2 Dequantize
RandomUniform RandomUniformInt RandomStandardNormal TruncatedNormal StatelessRandomUniformV2
StatelessRandomNormalV2 StatelessTruncatedNormalV2 StatelessRandomGetKeyCounter StatelessRandomUniform
StatelessRandomNormal
""".split()
)

# What TF's checkpoint saver needs to write and read the model's own variables/ folder.  Loading runs
# the restore chain (a TF1 model's ``restore_op_name``), so only reading ops may sit there: a write
# hidden in it ran at load time.
RESTORE_OPS = frozenset("RestoreV2 Restore RestoreSlice ShardedFilename ShardedFilespec StringJoin".split())
SAVER_OPS = RESTORE_OPS | frozenset("SaveV2 Save SaveSlices MergeV2Checkpoints StaticRegexFullMatch".split())

_DENY = re.compile(
    r"File|PyFunc|Print|Dataset|Reader|Summary|Save|Restore|Checkpoint|Rpc|Send|Recv|Debug|"
    r"Collective|ImmutableConst|DecodeProto|Vocab|Remap|Sql|Bigtable|Gcs|Iterator|Table|Shell|Exec"
)


class UnsafeGraphError(ValueError):
    """The graph holds an op a feature extractor never needs; ``str()`` names it."""


def _called(node, library: set[str]) -> set[str]:
    """Functions a node runs: by op name, or through function-valued attributes (f, body, then_branch...)."""
    names = {node.op} & library
    for value in node.attr.values():
        if value.func.name:
            names.add(value.func.name)
        names.update(f.name for f in value.list.func)
    return names & library


def _closure(roots: set[str], calls: dict[str, set[str]]) -> set[str]:
    """The functions ``roots`` run, directly or through each other (``calls``: function -> functions it calls)."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(calls.get(name, ()))
    return seen


def _ancestors(graph, names: list[str]) -> set[str]:
    """The graph nodes that feed the named tensors or ops (they and their ancestors, by input)."""
    by_name = {node.name: node for node in graph.node}
    todo = [t.split(":")[0].lstrip("^") for t in names if t]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        todo.extend(i.split(":")[0].lstrip("^") for i in by_name[name].input)
    return seen


def unsafe_ops(meta_graph) -> list[tuple[str, str]]:
    """List every op of one MetaGraph that is outside the allow-list.

    Saver ops count as allowed only inside the saver: reading ones in its restore chain, writing ones
    only in its save chain, and only in nodes and functions nothing else reaches.

    Args:
        meta_graph: A ``MetaGraphDef`` protobuf (one of ``SavedModel.meta_graphs``).

    Returns:
        ``(op, where)`` pairs, ``where`` being ``"node NAME"`` or ``"function NAME"``; empty when all is pure.
    """
    graph = meta_graph.graph_def
    functions = {f.signature.name: f for f in graph.library.function}
    library = set(functions)
    calls = {name: set().union(*[_called(n, library) for n in f.node_def]) for name, f in functions.items()}
    restore_nodes = _ancestors(graph, [meta_graph.saver_def.restore_op_name])
    save_nodes = _ancestors(graph, [meta_graph.saver_def.save_tensor_name]) - restore_nodes
    saver_nodes = restore_nodes | save_nodes

    def reached(nodes: set[str]) -> set[str]:
        return _closure(set().union(*[_called(n, library) for n in graph.node if n.name in nodes]), calls)

    restore_functions, save_functions = reached(restore_nodes), reached(save_nodes)
    other_roots = set().union(*[_called(n, library) for n in graph.node if n.name not in saver_nodes])
    everything_else = _closure(other_roots | (library - restore_functions - save_functions), calls)  # any entry

    def allowed(restore: bool, save: bool) -> frozenset:
        return PURE_OPS | (RESTORE_OPS if restore else SAVER_OPS if save else frozenset())

    found = []
    for node in graph.node:
        if node.op not in allowed(node.name in restore_nodes, node.name in save_nodes) and node.op not in library:
            found.append((node.op, f"node {node.name}"))
    for name, function in functions.items():
        ops = allowed(
            name in restore_functions and name not in everything_else,
            name in save_functions and name not in everything_else,
        )
        found += [(n.op, f"function {name}") for n in function.node_def if n.op not in ops and n.op not in library]
    return found


def check_savedmodel(folder: str | Path) -> None:
    """Refuse a SavedModel whose graph could do more than compute features; read it, never load or run it.

    Args:
        folder: A SavedModel folder (its ``saved_model.pb`` is parsed).

    Raises:
        UnsafeGraphError: One sentence naming the first op that touches files, processes or the network
            (else the first op not on the allow-list) and where it is, or saying ``saved_model.pb`` cannot be
            read.  Returns quietly when every op is pure.
    """
    import tensorflow  # noqa: F401  (whole package first: training imports it on another thread meanwhile)
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    folder = Path(folder)
    try:
        saved = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
    except (OSError, DecodeError, RuntimeError) as exc:
        raise UnsafeGraphError(f"cannot read {folder / 'saved_model.pb'} ({type(exc).__name__})") from None
    found = [item for meta_graph in saved.meta_graphs for item in unsafe_ops(meta_graph)]
    if not found:
        return
    denied = [item for item in found if _DENY.search(item[0])]
    op, where = (denied or found)[0]
    others = sorted({o for o, _ in found} - {op})
    more = f" (and {len(others)} other op{'s' if len(others) > 1 else ''}: {', '.join(others)[:200]})" if others else ""
    kind = (
        "an operation that can read or write files, run code or use the network"
        if denied
        else "not one of the pure math and image operations a feature extractor needs"
    )
    raise UnsafeGraphError(
        f"the backbone {folder} uses {op} in its {where}, {kind}{more}; "
        "pass --trust-backbone only if you trust where it came from"
    )

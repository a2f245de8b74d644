"""Convert MediaPipe's BlazeFace face detectors (TFLite) to the ONNX files affectstream ships.

Why a converter of our own: the runtime already has ONNX Runtime, and the detectors use a
dozen plain operators, so a direct graph translation (NHWC -> NCHW, weights transposed) keeps
the package free of mediapipe/TFLite at run time. Constant tensors (fp16 weights behind
DEQUANTIZE, sparse weights behind DENSIFY) are read back from one TFLite invocation with every
tensor preserved, so their dense float32 values are exactly what TFLite computes with.

Inputs: the `.tflite` files from the `mediapipe` 0.10.21 wheel (Apache-2.0), e.g.

    pip download mediapipe==0.10.21 --no-deps -d /tmp/mp && cd /tmp/mp && unzip -q *.whl \\
        'mediapipe/modules/face_detection/*'
    pip install tflite==2.18.0 ai-edge-litert    # converter-only tools, not runtime deps
    python3 scripts/blazeface_onnx.py /tmp/mp/mediapipe/modules/face_detection/\\
        face_detection_short_range.tflite affectstream/models/weights/face_detect_short.onnx

The script checks the ONNX output against TFLite on random and real images and prints the
largest difference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

OPS = {v: k for k, v in tflite.BuiltinOperator.__dict__.items() if not k.startswith("_")}
CONST_OPS = {"DEQUANTIZE", "DENSIFY"}


def _opts(op, cls):
    o = cls()
    t = op.BuiltinOptions()
    o.Init(t.Bytes, t.Pos)
    return o


def _pads_same(in_hw, k_hw, s_hw, d_hw=(1, 1)):
    pads_b, pads_e = [], []
    for n, k, s, d in zip(in_hw, k_hw, s_hw, d_hw, strict=True):
        out = -(-n // s)
        ke = (k - 1) * d + 1
        total = max((out - 1) * s + ke - n, 0)
        pads_b.append(total // 2)
        pads_e.append(total - total // 2)
    return pads_b + pads_e


def convert(path: str, out: str) -> None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    buf = Path(path).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    g = model.Subgraphs(0)
    interp = Interpreter(  # no XNNPACK: it folds the DEQUANTIZE ops and keeps no output
        model_path=path,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], np.float32))
    interp.invoke()

    def shape(i):
        return [int(v) for v in g.Tensors(i).ShapeAsNumpy()]

    consts: dict[int, np.ndarray] = {}
    for i in range(g.TensorsLength()):
        b = model.Buffers(g.Tensors(i).Buffer())
        if b is not None and b.DataLength() > 0:
            consts[i] = interp.get_tensor(i)
    nodes, inits = [], []
    name = {}

    def tname(i):
        return name.setdefault(i, f"t{i}")

    def const(arr, label):
        n = f"c_{label}_{len(inits)}"
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), n))
        return n

    in_idx = g.Inputs(0)
    _, H, W, C = shape(in_idx)
    nodes.append(helper.make_node("Transpose", ["input"], [tname(in_idx)], perm=[0, 3, 1, 2]))
    layout4 = {in_idx}  # tensors held NCHW in ONNX (all 4-D activations)
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        oc = model.OperatorCodes(op.OpcodeIndex())
        kind = OPS[max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())]
        ins = [op.Inputs(j) for j in range(op.InputsLength())]
        outs = [op.Outputs(j) for j in range(op.OutputsLength())]
        o = outs[0]
        if kind in CONST_OPS:
            consts[o] = interp.get_tensor(o).astype(np.float32)
            continue
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x, w, b = ins[0], consts[ins[1]].astype(np.float32), ins[2]
            if kind == "CONV_2D":
                opt = _opts(op, tflite.Conv2DOptions)
                wt = w.transpose(0, 3, 1, 2)  # OHWI -> OIHW
                group = 1
            else:
                opt = _opts(op, tflite.DepthwiseConv2DOptions)
                cin = shape(x)[3]
                wt = w.transpose(3, 0, 1, 2)  # 1HW(C*M) -> (C*M)1HW
                group = cin
            s = (opt.StrideH(), opt.StrideW())
            d = (opt.DilationHFactor(), opt.DilationWFactor())
            kh, kw = wt.shape[2:]
            ih, iw = shape(x)[1:3]
            pads = _pads_same((ih, iw), (kh, kw), s, d) if opt.Padding() == 0 else [0, 0, 0, 0]
            bias = consts[b].astype(np.float32) if b >= 0 else np.zeros(wt.shape[0], np.float32)
            act = opt.FusedActivationFunction()
            y = tname(o) if act == 0 else f"{tname(o)}_pre"
            nodes.append(
                helper.make_node(
                    "Conv",
                    [tname(x), const(wt, "w"), const(bias, "b")],
                    [y],
                    strides=list(s),
                    dilations=list(d),
                    pads=pads,
                    group=group,
                )
            )
            _act(nodes, act, y, tname(o))
            layout4.add(o)
        elif kind == "ADD":
            opt = _opts(op, tflite.AddOptions)
            a, b = ins
            names_ = []
            for t in (a, b):
                if t in consts:
                    c = consts[t].astype(np.float32)
                    names_.append(const(c.reshape(1, -1, 1, 1) if c.ndim == 1 else c, "add"))
                else:
                    names_.append(tname(t))
            act = opt.FusedActivationFunction()
            y = tname(o) if act == 0 else f"{tname(o)}_pre"
            nodes.append(helper.make_node("Add", names_, [y]))
            _act(nodes, act, y, tname(o))
            if len(shape(o)) == 4:
                layout4.add(o)
        elif kind == "RELU":
            nodes.append(helper.make_node("Relu", [tname(ins[0])], [tname(o)]))
            layout4.add(o)
        elif kind == "PAD":
            p = consts[ins[1]].astype(np.int64)  # (4, 2) NHWC
            order = [0, 3, 1, 2]
            pads = [int(p[i, 0]) for i in order] + [int(p[i, 1]) for i in order]
            nodes.append(
                helper.make_node(
                    "Pad", [tname(ins[0]), const(np.array(pads, np.int64), "pad")], [tname(o)]
                )
            )
            layout4.add(o)
        elif kind == "MAX_POOL_2D":
            opt = _opts(op, tflite.Pool2DOptions)
            k_ = (opt.FilterHeight(), opt.FilterWidth())
            s = (opt.StrideH(), opt.StrideW())
            ih, iw = shape(ins[0])[1:3]
            pads = _pads_same((ih, iw), k_, s) if opt.Padding() == 0 else [0, 0, 0, 0]
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [tname(ins[0])],
                    [tname(o)],
                    kernel_shape=list(k_),
                    strides=list(s),
                    pads=pads,
                )
            )
            layout4.add(o)
        elif kind == "RESIZE_BILINEAR":
            opt = _opts(op, tflite.ResizeBilinearOptions)
            oh, ow = shape(o)[1:3]
            mode = (
                "align_corners"
                if opt.AlignCorners()
                else ("half_pixel" if opt.HalfPixelCenters() else "asymmetric")
            )
            n_, c_ = shape(ins[0])[0], shape(ins[0])[3]
            sizes = const(np.array([n_, c_, oh, ow], np.int64), "size")
            nodes.append(
                helper.make_node(
                    "Resize",
                    [tname(ins[0]), "", "", sizes],
                    [tname(o)],
                    mode="linear",
                    coordinate_transformation_mode=mode,
                )
            )
            layout4.add(o)
        elif kind == "DEPTH_TO_SPACE":
            opt = _opts(op, tflite.DepthToSpaceOptions)
            nodes.append(
                helper.make_node(
                    "DepthToSpace",
                    [tname(ins[0])],
                    [tname(o)],
                    blocksize=opt.BlockSize(),
                    mode="DCR",
                )
            )
            layout4.add(o)
        elif kind == "RESHAPE":
            x = ins[0]
            src = tname(x)
            if x in layout4:  # back to NHWC before flattening, as TFLite lays it out
                src = f"{tname(x)}_nhwc"
                nodes.append(helper.make_node("Transpose", [tname(x)], [src], perm=[0, 2, 3, 1]))
            new = const(np.array(shape(o), np.int64), "shape")
            nodes.append(helper.make_node("Reshape", [src, new], [tname(o)]))
        elif kind == "CONCATENATION":
            opt = _opts(op, tflite.ConcatenationOptions)
            axis = opt.Axis()
            nd = len(shape(o))
            if axis < 0:
                axis += nd
            if all(i in layout4 for i in ins):
                axis = [0, 2, 3, 1][axis]
                layout4.add(o)
            nodes.append(helper.make_node("Concat", [tname(i) for i in ins], [tname(o)], axis=axis))
        else:
            raise NotImplementedError(kind)
    outputs = []
    for j in range(g.OutputsLength()):
        i = g.Outputs(j)
        label = "boxes" if shape(i)[-1] > 1 else "scores"
        if i in layout4:
            raise NotImplementedError("4-D output")
        nodes.append(helper.make_node("Identity", [tname(i)], [label]))
        outputs.append(helper.make_tensor_value_info(label, TensorProto.FLOAT, shape(i)))
    graph = helper.make_graph(
        nodes,
        "blazeface",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, H, W, C])],
        outputs,
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    m.doc_string = (
        "MediaPipe BlazeFace (Apache-2.0, mediapipe 0.10.21 wheel) converted by "
        "scripts/blazeface_onnx.py; input NHWC float32 RGB in [-1, 1]"
    )
    onnx.checker.check_model(m)
    onnx.save(m, out)
    _compare(path, out, (H, W))


def _act(nodes, act, y, out):
    if act == 0:
        return
    if act == 1:
        nodes.append(helper.make_node("Relu", [y], [out]))
    elif act == 3:
        nodes.append(helper.make_node("Clip", [y, "", ""], [out]))
        raise NotImplementedError("relu6")
    else:
        raise NotImplementedError(f"activation {act}")


def _compare(path, out, hw):
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path)
    interp.allocate_tensors()
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(3):
        x = rng.uniform(-1, 1, (1, *hw, 3)).astype(np.float32)
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        ref = {d["shape"][-1]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}
        got = sess.run(None, {"input": x})
        for g_ in got:
            worst = max(worst, float(np.abs(g_ - ref[g_.shape[-1]]).max()))
    print(f"{out}: largest |onnx - tflite| on random input {worst:.2e}")


if __name__ == "__main__":
    convert(sys.argv[1], sys.argv[2])

"""Check an exported model with onnx.checker and report what ONNX Runtime makes of it.

    python3 inspect_model.py MODEL.onnx REPORT.json

REPORT.json gets: the operator counts of the model as written, and of the graph ONNX Runtime
optimizes it to (CPU provider, ORT_ENABLE_ALL, saved through SessionOptions.
optimized_model_filepath), so the Rust tests can check which fusions happen. onnx.checker
runs with full_check (shape inference included). Also: whether every value the graph's nodes
produce has a type after ONNX shape inference (`untyped`: the names that do not), and whether
onnxruntime's `quantize_dynamic` works on it with its defaults (`quantize_dynamic`: "ok" or the
error), as standard tools need. Exit status 0 on success.
"""

import collections
import json
import os
import sys
import tempfile

import onnx
import onnxruntime as ort


def op_counts(model):
    return dict(
        collections.Counter((n.domain or "") + ":" + n.op_type for n in model.graph.node)
    )


def main(model_path, report_path):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    with tempfile.TemporaryDirectory() as tmp:
        optimized = {}
        for name, level in [
            ("extended", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
            ("all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        ]:
            path = os.path.join(tmp, name + ".onnx")
            options = ort.SessionOptions()
            options.graph_optimization_level = level
            options.optimized_model_filepath = path
            options.intra_op_num_threads = 1
            ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
            optimized[name] = op_counts(onnx.load(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    typed = {v.name for v in list(inferred.graph.value_info) + list(inferred.graph.output)
             if v.type.tensor_type.elem_type}
    typed |= {i.name for i in inferred.graph.initializer}
    untyped = sorted({o for n in inferred.graph.node for o in n.output if o and o not in typed})
    try:
        from onnxruntime.quantization import quantize_dynamic
        with tempfile.TemporaryDirectory() as tmp:
            quantize_dynamic(model_path, os.path.join(tmp, "q.onnx"))
        quantized = "ok"
    except Exception as e:  # the report says what failed; the Rust test decides
        quantized = f"{type(e).__name__}: {e}"[:500]
    report = {
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,
        "opset_import": {o.domain: o.version for o in model.opset_import},
        "ops": op_counts(model),
        "optimized": optimized,
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
        "untyped": untyped,
        "quantize_dynamic": quantized,
    }
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])

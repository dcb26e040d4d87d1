"""Validate an ONNX file with onnx.checker and run it with ONNX Runtime (CPU).

Used by crates/adept-onnx/tests/onnxruntime.rs:

    python3 check_and_run.py MODEL.onnx INPUTS.json REPORT.json

INPUTS.json maps input names to {"dtype": "float32"|"int64"|..., "shape": [...],
"data": [... flat ...]}. REPORT.json gets what Python read back from the file (IR
version, opsets, metadata, names), the outputs of a session with all graph
optimizations enabled, and the operator types of the graph ONNX Runtime optimizes
to (extended level), so the Rust side can check fusions.

Exit status 0 on success; any failure raises (non-zero status, traceback on stderr).
"""

import json
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort


def main(model_path, inputs_path, report_path):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)

    with open(inputs_path) as f:
        spec = json.load(f)
    feeds = {
        name: np.asarray(t["data"], dtype=t["dtype"]).reshape(t["shape"])
        for name, t in spec.items()
    }

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model_path, options, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feeds)
    outputs = {
        name: {
            "shape": list(value.shape),
            "data": value.astype(np.float64).ravel().tolist(),
        }
        for name, value in zip(names, results)
    }

    with tempfile.TemporaryDirectory() as tmp:
        optimized_path = os.path.join(tmp, "optimized.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        )
        options.optimized_model_filepath = optimized_path
        ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        optimized_ops = [
            (n.domain or "") + ":" + n.op_type for n in onnx.load(optimized_path).graph.node
        ]

    report = {
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,
        "ir_version": model.ir_version,
        "producer_name": model.producer_name,
        "opset_import": {o.domain: o.version for o in model.opset_import},
        "metadata": {p.key: p.value for p in model.metadata_props},
        "session_metadata": dict(session.get_modelmeta().custom_metadata_map),
        "inputs": [i.name for i in model.graph.input],
        "outputs": outputs,
        "initializers": [t.name for t in model.graph.initializer],
        "ops": [(n.domain or "") + ":" + n.op_type for n in model.graph.node],
        "optimized_ops": optimized_ops,
    }
    with open(report_path, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])

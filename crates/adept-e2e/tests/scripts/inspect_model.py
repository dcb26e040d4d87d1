"""Check an exported model with onnx.checker and report what ONNX Runtime makes of it.

    python3 inspect_model.py MODEL.onnx REPORT.json

REPORT.json gets: the operator counts of the model as written, and of the graph ONNX Runtime
optimizes it to (CPU provider, ORT_ENABLE_ALL, saved through SessionOptions.
optimized_model_filepath), so the Rust tests can check which fusions happen. A graph whose
encoder is an `If` (the packed export: a batch without padding runs the padded encoder of
`then_branch`, any other the packed one of `else_branch`) is counted along each path: `ops`
and `optimized` count the outer graph with the `then_branch`, `ops_packed` and
`optimized_packed` with the `else_branch`; `if_nodes` says how many `If` nodes there are, and
`routing` which path ONNX Runtime took (whether a `NonZero` kernel ran, from its profile) on
a batch of two rows without padding (`no_padding`) and with padding (`padding`).
`attention_weights_folded`: whether every `com.microsoft:Attention` node of the optimized graph
reads its weight from an initializer (ONNX Runtime folded the `Concat` the graph builds it with). onnx.checker
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


def path_nodes(graph, branch):
    """The nodes a run takes: an If's sub-graph `branch` instead of the If itself."""
    for n in graph.node:
        subs = {a.name: a.g for a in n.attribute if a.type == onnx.AttributeProto.GRAPH}
        if n.op_type == "If" and branch in subs:
            yield from path_nodes(subs[branch], branch)
        else:
            yield n


def all_graphs(graph):
    yield graph
    for n in graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from all_graphs(a.g)


def weights_folded(model):
    """Whether each com.microsoft:Attention node's weight is an initializer of its graph or an
    outer one (ONNX's own `Attention` takes projected q/k/v, no weight)."""
    def walk(graph, known):
        known = known | {t.name for t in graph.initializer}
        ok = True
        for n in graph.node:
            if (n.domain, n.op_type) == ("com.microsoft", "Attention") and n.input[1] not in known:
                ok = False
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    ok = walk(a.g, known) and ok
        return ok
    return walk(model.graph, set())


def op_counts(model, branch="then_branch"):
    return dict(
        collections.Counter(
            (n.domain or "") + ":" + n.op_type for n in path_nodes(model.graph, branch)
        )
    )


def ran_nonzero(model_path, mask):
    """Whether running the model on ids of 1 under `mask` runs a NonZero kernel (profiled)."""
    import numpy as np

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        mask = np.asarray(mask, dtype=np.int64)
        feeds = {"input_ids": np.ones_like(mask), "attention_mask": mask}
        if "token_type_ids" in [i.name for i in session.get_inputs()]:
            feeds["token_type_ids"] = np.zeros_like(mask)
        session.run(None, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    return any(
        e.get("cat") == "Node" and e.get("args", {}).get("op_name") == "NonZero" for e in events
    )


def main(model_path, report_path):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    with tempfile.TemporaryDirectory() as tmp:
        optimized = {}
        optimized_packed = {}
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
            optimized_packed[name] = op_counts(onnx.load(path), "else_branch")
            if name == "all":
                attention_folded = weights_folded(onnx.load(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    graphs = list(all_graphs(inferred.graph))
    typed = {v.name for g in graphs for v in list(g.value_info) + list(g.output)
             if v.type.tensor_type.elem_type}
    typed |= {i.name for g in graphs for i in g.initializer}
    untyped = sorted({o for g in graphs for n in g.node for o in n.output if o and o not in typed})
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
        "ops_packed": op_counts(model, "else_branch"),
        "optimized_packed": optimized_packed,
        "if_nodes": sum(1 for g in graphs for n in g.node if n.op_type == "If"),
        "attention_weights_folded": attention_folded,
        "routing": {
            "no_padding": ran_nonzero(model_path, [[1, 1, 1, 1], [1, 1, 1, 1]]),
            "padding": ran_nonzero(model_path, [[1, 1, 1, 1], [1, 1, 0, 0]]),
        },
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
        "untyped": untyped,
        "quantize_dynamic": quantized,
    }
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])

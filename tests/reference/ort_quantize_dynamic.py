#!/usr/bin/env python3
"""The usual Python int8 route applied to an ONNX file: onnxruntime's `quantize_dynamic` with its
defaults (int8 weights with one scale per tensor, activations quantized at run time).

    python3 tests/reference/ort_quantize_dynamic.py IN.onnx OUT.onnx [--per-channel]

`adept bench --serving --pytorch` runs it on adept's folded f32 bundle to compare with
`adept export --dtype int8` (speed and SST-2 dev accuracy). Deterministic (no calibration data).
Prints one JSON line: the output path, its size and the seconds taken. Needs onnx, onnxruntime.
"""
import argparse
import json
import os
import time

import onnxruntime as ort
from onnxruntime.quantization import quantize_dynamic


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--per-channel", action="store_true")
    args = ap.parse_args()
    start = time.time()
    quantize_dynamic(args.model, args.out, per_channel=args.per_channel)
    print(
        json.dumps(
            {
                "out": args.out,
                "bytes": os.path.getsize(args.out),
                "per_channel": args.per_channel,
                "quantize_s": round(time.time() - start, 2),
                "onnxruntime": ort.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()

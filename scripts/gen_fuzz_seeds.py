#!/usr/bin/env python3
"""Writes the frame_decode seed corpus from docs/vectors.json (valid frames,
invalid frames, batches and legacy requests), as fuzz/corpus/frame_decode/seed-<name>."""
import json
import pathlib

root = pathlib.Path(__file__).resolve().parent.parent
vectors = json.loads((root / "docs" / "vectors.json").read_text())
out = root / "fuzz" / "corpus" / "frame_decode"
out.mkdir(parents=True, exist_ok=True)
for group in ("frames", "invalid", "batches", "invalid_batches", "legacy_requests"):
    for case in vectors[group]:
        (out / f"seed-{case['name']}").write_bytes(bytes.fromhex(case["hex"]))

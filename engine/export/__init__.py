"""Detector-training datasets: real clips and their swaps, laid out as FaceForensics++, with masks.

`options` holds what an export is asked to do (no heavy imports, for `--help` and the web tab),
`split` decides which person goes to train/val/test and which fakes are made, `layout` names every
file and writes the manifest and the dataset's own description, `crops` cuts the face crops, and
`run` does the work through the engine's own swap loop (`engine.swap.video.swap_frames`).
"""

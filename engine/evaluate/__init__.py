"""Measure swap quality: identity, expression and pose kept, fidelity, sharpness, seams, flicker, speed.

`python -m engine evaluate` (command.py, its defaults in options.py) runs `run.evaluate`, which
swaps a video with the product's own loop (`engine.swap.video`) and measures it with judges
independent of the model: the face sets' references and held-out faces (inputs.py), per-frame
figures (meter.py, on identity.py's dlib and metrics.py's pure functions), and the report assembled
and written as report.json/report.html with plots (report.py).
"""

"""Measure swap quality: identity, expression and pose kept, fidelity, sharpness, seams, flicker, speed.

`python -m engine evaluate` (command.py) runs `run.evaluate`, which swaps a video with a model and
measures it with judges independent of the model (identity.py: dlib), pure metric functions
(metrics.py), and writes report.json/report.html with plots (report.py).
"""

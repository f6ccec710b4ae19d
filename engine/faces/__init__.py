"""Faces: detection (RetinaFace, MTCNN) behind one interface, 5-point alignment, face sets.

The same functions serve extraction and swapping, so training crops and swap crops can never
drift apart (template, coverage, size).
"""

"""Identity: OpenCV's SFace face-recognition network, converted offline (`sface`), and the training's
identity loss on a model's own crops (`loss`). Never dlib's network, which judges evaluations."""

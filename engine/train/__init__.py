"""Training: two face sets in, a model folder out (`from engine.train import TrainConfig, train`).

    result = train(TrainConfig(faces_a=..., faces_b=..., model_dir=...), listeners=[...], stop=StopFlag())

The names load lazily so that `python -m engine --help` (which imports engine.train.command)
does not pay for importing torch.
"""

__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str):
    if name in __all__:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

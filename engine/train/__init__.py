"""Training: two face sets in, a model folder out (`from engine.train import TrainConfig, train`).

    result = train(TrainConfig(faces_a=..., faces_b=..., model_dir=...), listeners=[...], stop=StopFlag())
    result = train_color(ColorConfig(model_dir=...), listeners=[...], stop=StopFlag())   # its colour net

The names load lazily so that `python -m engine --help` (which imports engine.train.command)
does not pay for importing torch.
"""

_HOMES = {"TrainConfig": "config", "ColorConfig": "config", "TrainResult": "loop", "train": "trainer",
          "train_color": "color"}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

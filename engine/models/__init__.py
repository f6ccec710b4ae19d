"""Face-swap models: presets of one shared encoder with one decoder per identity, and their folders.

    model = build_model("lite")                 # or "original", "dfl-h128", "intracoder"
    rgb, mask = model(faces_a, "b")             # A's faces rendered as B
    save_model(folder, model, {"iteration": 1000})
    model, meta = load_model(folder)
    net = build_color_net(2)                    # the optional colour network, kept in the same folder
    save_color_net(folder, net, {}); net, meta = load_color_net(folder)

`engine.models.folder` is the model folder's layout (every file name) and what pages read from it
without loading weights: `summary`, `training_settings`, `loss_history`, `stamp`, `latest_preview`.
"""

from .colornet import ColorNet, build_color_net
from .folder import is_model_dir
from .model import MODEL_COVERAGE, FaceSwapModel, build_model
from .presets import PRESETS, PresetInfo, default_preset
from .store import has_color_net, load_color_net, load_model, save_color_net, save_model

__all__ = ["FaceSwapModel", "build_model", "MODEL_COVERAGE", "PRESETS", "PresetInfo", "default_preset",
           "save_model", "load_model", "is_model_dir", "ColorNet", "build_color_net", "save_color_net",
           "load_color_net", "has_color_net"]

"""Swapping building blocks: per-face pure functions on numpy arrays (RGB uint8, float32 masks) and tensors.

    settings                what a user sets (SwapSettings, VideoSettings), defaults and checks
    color.correct_faces     generated faces -> destination's colours (aligned space, on the device)
    masks.blend_mask        where the swapped face is pasted, feathered (aligned space)
    blend.blend             aligned face -> frame (Poisson or alpha)
    smoothing               One-Euro landmark smoothing and IoU face tracks for video
    pipeline.Swapper        one frame: detect, align, model, colour, paste
    video                   a video: decode, detect or track, smooth, swap, encode (swap_frames, swap_video)

Photo, video, web-preview and evaluation paths all call these, so a swap looks the same everywhere.
"""

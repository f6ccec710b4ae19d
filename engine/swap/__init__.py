"""Swapping building blocks: per-face pure functions on numpy arrays (RGB uint8, float32 masks).

    color.correct_color     generated face -> destination's colours (aligned space)
    masks.blend_mask        where the swapped face is pasted, feathered (aligned space)
    blend.blend             aligned face -> frame (Poisson or alpha)
    smoothing               One-Euro landmark smoothing and IoU face tracks for video

Photo, video and web-preview paths all call these, so a swap looks the same everywhere.
"""

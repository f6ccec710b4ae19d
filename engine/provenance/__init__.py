"""Provenance: what every output of the studio says about itself, and how anyone checks it.

`record` holds the facts (synthetic, studio, model id, source hash, date), `metadata` writes and
reads them in PNG/JPEG/MP4 containers, `watermark` hides a payload in the pixels of each swapped
face, and `verify` reads both back from a file.
"""

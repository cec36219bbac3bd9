"""`quality: "auto"`: per image, the lowest quality whose output scores at least a target on
SSIMULACRA2 against the source, found in few encodes.

Pure search over an `attempt(quality) -> (size, score)` callable (imaging.py encodes, decodes
and scores; this module never touches pixels), so it is tested without images.
"""

from __future__ import annotations

# What outputs of `auto` are reused by (services/reuse.py): the metric's implementation
# (chalicelib/perceptual.py, and how the pair is scaled before scoring) and this search.
# Bumped whenever either changes what quality an image gets.
AUTO_SEARCH_VERSION = "ssimulacra2-np1/search1"

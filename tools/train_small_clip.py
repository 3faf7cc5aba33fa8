#!/usr/bin/env python
"""Train the small CLIP shipped for ShapesOVD (weights/shapes_clip_vit.pt).

The command line of ezsd.clip.small_clip_training (`--help` lists its options).
"""

from ezsd.clip.small_clip_training import main

if __name__ == "__main__":
    main()

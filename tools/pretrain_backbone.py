#!/usr/bin/env python
"""Pre-train the ShapesOVD detector's ResNet on image-level labels: ShapesOVD's ImageNet.

The command line of ezsd.backbone_pretraining (`--help` lists its options).
"""

from ezsd.backbone_pretraining import main

if __name__ == "__main__":
    main()

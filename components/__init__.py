"""KFP v2 components: typed functions with artifacts in and out whose bodies only call
``serendip.*`` (all logic is testable without KFP).

Every component runs in one image, :data:`IMAGE` (built from ``components/Dockerfile``); set
``SERENDIP_IMAGE`` when compiling to point at your registry. The image already contains the
project and kfp, so components install nothing at run time (``packages_to_install=None``,
``install_kfp_package=False``) — a cluster without internet access runs them as they are.
"""

from __future__ import annotations

import os

IMAGE = os.environ.get("SERENDIP_IMAGE", "ghcr.io/serendip/serendip:0.1.0")
GPU_IMAGE = os.environ.get("SERENDIP_GPU_IMAGE", "ghcr.io/serendip/serendip:0.1.0-cuda")

# Keyword arguments for @dsl.component shared by all components of this project.
COMPONENT_KW = dict(base_image=IMAGE, packages_to_install=None, install_kfp_package=False)

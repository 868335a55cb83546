"""KFP v2 components: typed functions with artifacts in and out whose bodies only call
``serendip.*`` (all logic is testable without KFP).

Components run in the project image, :data:`IMAGE` (built from ``docker/Dockerfile`` by
``make image``); the ones whose tasks request ``nvidia.com/gpu`` (``finetune``, ``score_shard``)
run in its CUDA variant, :data:`GPU_IMAGE`. Set ``SERENDIP_IMAGE`` / ``SERENDIP_GPU_IMAGE`` when
compiling to point at your registry. The images already contain the project and kfp, so
components install nothing at run time (``packages_to_install=None``,
``install_kfp_package=False``) — a cluster without internet access runs them as they are.
"""

from __future__ import annotations

import os

IMAGE = os.environ.get("SERENDIP_IMAGE", "ghcr.io/serendip/serendip:0.1.0")
GPU_IMAGE = os.environ.get("SERENDIP_GPU_IMAGE", "ghcr.io/serendip/serendip:0.1.0-cuda")

# Keyword arguments for @dsl.component shared by all components of this project ...
COMPONENT_KW = dict(base_image=IMAGE, packages_to_install=None, install_kfp_package=False)
# ... and for the components whose tasks request a GPU (the CUDA image).
GPU_COMPONENT_KW = dict(COMPONENT_KW, base_image=GPU_IMAGE)

# Retries for tasks that talk to external services (MLflow tracking server, Feast online store):
# a restart or a blip of the service is retried instead of failing the run.
RETRY = dict(num_retries=3, backoff_duration="30s", backoff_factor=2.0,
             backoff_max_duration="600s")

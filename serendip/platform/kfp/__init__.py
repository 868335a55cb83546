"""Kubeflow Pipelines (KFP v2) for Serendip.

* :mod:`serendip.platform.kfp.components` — the components, typed functions with artifacts in
  and out whose bodies call the library's stage entries (``cluster_stage``, ``curate_stage``,
  ``finetune_stage``, ...), never the CLI; the image they run in.
* :mod:`serendip.platform.kfp.pipelines` — the ``training`` and ``scoring`` pipelines wiring
  them.
* :mod:`serendip.platform.kfp.runner` — compile, run locally with ``kfp.local``, or submit to a
  KFP endpoint (``serendip pipeline compile|run``).

Importing this package imports no KFP SDK; its modules do.
"""

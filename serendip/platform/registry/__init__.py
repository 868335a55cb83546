"""MLflow adapter: tracking (params, per-step metrics, plots), the model registry, aliases and
the promotion gate, one module per concept:

* :mod:`.errors` — MLflow exceptions as one-line project errors (:func:`translate`,
  :func:`mlflow_errors`);
* :mod:`.store` — the tracking URI (``MLFLOW_TRACKING_URI``, else the work directory's sqlite
  store with its artifacts beside it; :func:`setup`) and experiments;
* :mod:`.runs` — runs, params, metrics, artifacts, dataset inputs and KFP run tags;
* :mod:`.models` — ``serendip-mllm`` registered as an MLflow *model from code*, versions
  resolved by number or alias, downloaded as saved model directories;
* :mod:`.gate` — the promotion gate: ``@champion`` moves to the ``@challenger`` only when it is
  not worse than the champion **and** beats the best baseline by more than a margin (issue 15).

The public names are re-exported here (``from serendip.platform import registry``); nothing
imports mlflow until a function is called.
"""

from serendip.platform.registry.errors import (
    CLIENT_CODES,
    is_mlflow_error,
    mlflow_errors,
    translate,
    translated,
)
from serendip.platform.registry.gate import (
    GATE_METRIC,
    GateBaseline,
    PromotionResult,
    baseline_from_report,
    check_margin,
    promote,
    recorded_baseline,
)
from serendip.platform.registry.models import (
    CHALLENGER,
    CHAMPION,
    MLLM,
    PYFUNC_CODE,
    alias_version,
    check_model,
    download_model,
    mllm_signature,
    pip_requirements,
    register_mllm,
    resolve_version,
    version_metric,
)
from serendip.platform.registry.runs import (
    KFP_RUN_ENV,
    KFP_RUN_NAME_ENV,
    flatten,
    kfp_tags,
    log_artifact,
    log_metrics,
    log_tables,
    set_kfp_run,
    start_run,
)
from serendip.platform.registry.store import (
    URI_SCHEMES,
    check_uri,
    default_uri,
    ensure_experiment,
    setup,
)

__all__ = [
    "CHALLENGER", "CHAMPION", "CLIENT_CODES", "GATE_METRIC", "KFP_RUN_ENV", "KFP_RUN_NAME_ENV",
    "MLLM", "PYFUNC_CODE", "URI_SCHEMES", "GateBaseline", "PromotionResult", "alias_version",
    "baseline_from_report", "check_margin", "check_model", "check_uri", "default_uri",
    "download_model", "ensure_experiment", "flatten", "is_mlflow_error", "kfp_tags",
    "log_artifact", "log_metrics", "log_tables", "mllm_signature", "mlflow_errors",
    "pip_requirements", "promote", "recorded_baseline", "register_mllm", "resolve_version",
    "set_kfp_run", "setup", "start_run", "translate", "translated", "version_metric",
]

"""Which trackers a job may log to on this deployment (`integrations` on job create).

W&B needs nothing from the operator at POST: runs are written offline by default (TUNEFORGE_WANDB_MODE). An
MLflow server is a URL the worker will call, so only the operator's servers are accepted
(TUNEFORGE_MLFLOW_TRACKING_URIS): a tenant could otherwise point the worker at any address inside the network.
"""

from __future__ import annotations

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import InvalidRequest
from tuneforge.contract.spec import Integration, JobSpec, tracking_uri_allowed


def _tracking_uri(item: Integration, index: int, settings: Settings) -> str:
    assert item.mlflow is not None
    allowed = settings.mlflow_tracking_uris
    if not allowed:
        raise InvalidRequest(
            "MLflow integrations are not enabled on this server (the operator lists its tracking servers in "
            "TUNEFORGE_MLFLOW_TRACKING_URIS).",
            param=f"integrations.{index}",
            code="integration_not_allowed",
        )
    uri = item.mlflow.tracking_uri or allowed[0]
    if not tracking_uri_allowed(uri, allowed):
        # The allowed servers are the operator's internal names: not listed back to a tenant.
        raise InvalidRequest(
            f"tracking_uri {uri} is not one of this server's MLflow tracking servers (TUNEFORGE_MLFLOW_TRACKING_URIS); "
            "omit it to log to the default one.",
            param=f"integrations.{index}.mlflow.tracking_uri",
            code="integration_not_allowed",
        )
    return uri


def check_integrations(spec: JobSpec, settings: Settings) -> None:
    """Refuse an MLflow server the operator has not listed; a 400 naming the integration."""
    for index, item in enumerate(spec.integrations):
        if item.mlflow is not None:
            _tracking_uri(item, index, settings)


def resolve_integrations(spec: JobSpec, settings: Settings) -> JobSpec:
    """The spec with each MLflow integration's server filled in (the default one where none was named), so
    the stored job says where it logs and a change of the default later does not move a queued job."""
    items = []
    for index, item in enumerate(spec.integrations):
        if item.mlflow is not None:
            mlflow = item.mlflow.model_copy(update={"tracking_uri": _tracking_uri(item, index, settings)})
            item = item.model_copy(update={"mlflow": mlflow})
        items.append(item)
    return spec.model_copy(update={"integrations": items})

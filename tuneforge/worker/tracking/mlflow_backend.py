"""MLflow, with its tracking client (`mlflow-skinny`) against a tracking server the operator allows.

The run is tagged `tuneforge.job_id`: a later attempt of the job (a resume after a pause or a lost worker) finds
it and logs on, rather than starting a second run. The client's own retries are turned off (our sink retries
with backoff, off the training thread) and each request has a short timeout, so a server that is slow holds
only the sink's thread."""

from __future__ import annotations

import os
import time
from typing import Any

from tuneforge.contract.spec import MlflowSettings, tracking_uri_allowed
from tuneforge.worker.tracking.sink import Rejected

MISSING = "the MLflow client is not installed on this worker (pip install 'tuneforge[integrations]')"
# How a job's outcome reads as an MLflow run status; other outcomes (paused, handed back) leave it RUNNING.
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED", "pruned": "KILLED"}
PARAMS_PER_CALL = 100  # log_batch's limit
PARAM_VALUE_MAX = 6000


class MlflowBackend:
    kind = "mlflow"
    title = "MLflow"

    def __init__(
        self, cfg: MlflowSettings, *, job_id: str, model: str, params: dict[str, Any], allowed: list[str]
    ) -> None:
        assert cfg.tracking_uri is not None, "filled in at job create (tuneforge/app/jobs/integrations.py)"
        self.cfg = cfg
        self.uri: str = cfg.tracking_uri
        self.job_id = job_id
        self.model = model
        self.params = params
        self.allowed = allowed
        self.where = self.uri
        self._client: Any = None
        self._run_id: str | None = None
        self._last_step = 0

    def open(self) -> str:
        # Checked again here: the operator may have withdrawn the server since the job was queued.
        if not tracking_uri_allowed(self.uri, self.allowed):
            raise Rejected("it is no longer one of this server's (TUNEFORGE_MLFLOW_TRACKING_URIS)", fatal=True)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        try:
            from mlflow.entities import Param
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise Rejected(MISSING, fatal=True) from exc
        client = MlflowClient(tracking_uri=self.uri)
        try:
            experiment_id = self._experiment(client, MlflowException)
            runs = client.search_runs(
                [experiment_id], filter_string=f"tags.`tuneforge.job_id` = '{self.job_id}'", max_results=1
            )
            if runs:
                run_id = runs[0].info.run_id
                client.update_run(run_id, status="RUNNING")
            else:
                tags = {"tuneforge.job_id": self.job_id, "tuneforge.model": self.model}
                run = client.create_run(experiment_id, run_name=self.cfg.run_name or self.job_id, tags=tags)
                run_id = run.info.run_id
            params = [Param(k, str(v)[:PARAM_VALUE_MAX]) for k, v in self.params.items()]
            for i in range(0, len(params), PARAMS_PER_CALL):
                client.log_batch(run_id, params=params[i : i + PARAMS_PER_CALL])
        except MlflowException as exc:
            _raise_if_refused(exc, fatal=True)
            raise
        self._client, self._run_id = client, run_id
        return f"Logging to MLflow at {self.uri}: experiment {self.cfg.experiment}, run {run_id}"

    def _experiment(self, client: Any, error: type[Exception]) -> str:
        found = client.get_experiment_by_name(self.cfg.experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise Rejected(f"experiment {self.cfg.experiment!r} is deleted on the server", fatal=True)
            return str(found.experiment_id)
        try:
            return str(client.create_experiment(self.cfg.experiment))
        except error:  # created by another job meanwhile
            found = client.get_experiment_by_name(self.cfg.experiment)
            if found is None:
                raise
            return str(found.experiment_id)

    def log(self, points: list[tuple[int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric
        from mlflow.exceptions import MlflowException

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for step, values in points for key, value in values.items()]
        self._last_step = max([self._last_step, *(step for step, _ in points)])
        try:
            for i in range(0, len(metrics), 1000):  # log_batch's limit
                self._client.log_batch(self._run_id, metrics=metrics[i : i + 1000])
        except MlflowException as exc:
            _raise_if_refused(exc)
            raise

    def finish(self, summary: dict[str, float], status: str) -> None:
        from mlflow.entities import Metric, RunTag
        from mlflow.exceptions import MlflowException

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, self._last_step) for key, value in summary.items()]
        try:
            self._client.log_batch(self._run_id, metrics=metrics, tags=[RunTag("tuneforge.status", status)])
            if status in RUN_STATUS:
                self._client.set_terminated(self._run_id, status=RUN_STATUS[status])
        except MlflowException as exc:
            _raise_if_refused(exc)
            raise

    def abandon(self) -> None:
        return None  # the client holds no connection between calls


def _raise_if_refused(exc: Any, *, fatal: bool = False) -> None:
    """A 4xx answer is the server refusing the request (retrying sends the same thing again); anything else, a
    connection error or a 5xx, is an outage and is retried."""
    code = exc.get_http_status_code()
    if 400 <= code < 500:
        raise Rejected(" ".join(str(exc.message).split())[:300], fatal=fatal) from exc

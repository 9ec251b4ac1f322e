"""/metrics in the Prometheus text format.

Job-state series are derived from the database on each scrape: the workers write their progress and
throughput there anyway, so counters from several processes (and replicas) need no multiprocess
mode and survive restarts. The API's own measurements (inference latency, webhook failures) come
from tuneforge/app/ops/instruments.py.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from tuneforge.app.db.types import utcnow
from tuneforge.app.jobs import repository as jobs_repository
from tuneforge.app.ops import repository
from tuneforge.app.ops.instruments import REGISTRY
from tuneforge.contract.status import TERMINAL, JobStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class JobsCollector(Collector):
    """One scrape's reading of the jobs table."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def collect(self) -> Iterator[Metric]:
        counts = jobs_repository.counts_by_status(self.session)
        jobs = GaugeMetricFamily("tuneforge_jobs", "Jobs by status (queue depth: status=queued).", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status, 0))
        yield jobs

        oldest = repository.oldest_enqueued(self.session)
        age = max(0.0, (utcnow() - oldest).total_seconds()) if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "tuneforge_queue_oldest_seconds", "How long the longest-waiting queued job has waited (0: none).", age
        )
        yield CounterMetricFamily(
            "tuneforge_jobs_started",
            "Jobs a worker claimed and started training.",
            repository.started_count(self.session),
        )
        finished = CounterMetricFamily("tuneforge_jobs_finished", "Jobs that finished, by outcome.", labels=["outcome"])
        for status in TERMINAL:
            finished.add_metric([status.value], counts.get(status, 0))
        yield finished
        yield CounterMetricFamily(
            "tuneforge_trained_tokens", "Tokens trained by finished jobs.", repository.trained_tokens(self.session)
        )
        tps = GaugeMetricFamily(
            "tuneforge_training_tokens_per_second",
            "Training throughput of each busy worker: tokens/s at its job's latest logged step.",
            labels=["worker"],
        )
        for worker, value in repository.training_throughput(self.session):
            tps.add_metric([worker], value)
        yield tps


def render(session: Session) -> bytes:
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(JobsCollector(session))
    return generate_latest(scrape) + generate_latest(REGISTRY)

"""Gauges read from Redis and the database when /metrics is scraped (a custom collector):
queue depths, workers online, pending images and the oldest one's age, jobs by status.
Read afresh on every scrape, so every API process reports the same values; alert on
max() across instances, never sum()."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily

from shared import db, overview

# Every family this collector yields, for the dashboard test and docs/operations.md.
NAMES = ("digits_up", "digits_queue_messages", "digits_queue_unacked_messages",
         "digits_workers_online", "digits_worker_processes", "digits_images_pending",
         "digits_oldest_pending_image_age_seconds", "digits_jobs")


class StateCollector:
    def __init__(self, redis_client) -> None:
        self.redis = redis_client

    def describe(self):
        return []  # read only when collected: registering must not query anything

    def collect(self):
        up = GaugeMetricFamily("digits_up", "Whether /metrics could read Redis and the "
                               "database when scraped (1) or not (0).", labels=["source"])
        try:
            depths = overview.queue_depths(self.redis)
            by_queue = overview.workers_by_queue(overview.workers(self.redis))
        except Exception:
            up.add_metric(["redis"], 0)
        else:
            up.add_metric(["redis"], 1)
            messages = GaugeMetricFamily("digits_queue_messages",
                                         "Messages waiting on a queue.", labels=["queue"])
            online = GaugeMetricFamily("digits_workers_online",
                                       "Workers consuming a queue (announced within "
                                       f"{overview.HEARTBEAT_TTL_S} s).", labels=["queue"])
            processes = GaugeMetricFamily("digits_worker_processes", "Pool processes (or "
                                          "threads) of the workers on a queue.",
                                          labels=["queue"])
            for queue in overview.QUEUES:
                messages.add_metric([queue], depths[queue])
                online.add_metric([queue], by_queue[queue]["workers"])
                processes.add_metric([queue], by_queue[queue]["processes"])
            yield messages
            yield online
            yield processes
            yield GaugeMetricFamily("digits_queue_unacked_messages", "Messages delivered to "
                                    "a worker and not yet acknowledged.",
                                    value=depths["unacked"])
        now = datetime.now(UTC)
        try:
            with db.session() as s:
                state = overview.database(s, now)
        except Exception:
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            yield GaugeMetricFamily("digits_images_pending", "Images stored and not yet "
                                    "finished.", value=state["pending"])
            oldest = state["oldest_pending"]
            yield GaugeMetricFamily(
                "digits_oldest_pending_image_age_seconds",
                "How long the oldest pending image has waited since it was (last) queued; "
                "0 when none is pending.", value=oldest["age_s"] if oldest else 0)
            jobs = GaugeMetricFamily("digits_jobs", "Jobs by status.", labels=["status"])
            for status, n in state["jobs"].items():
                jobs.add_metric([status], n)
            yield jobs
        yield up

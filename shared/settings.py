"""The one settings object, read from `DIGITS_*` environment variables.

The defaults give the local stack: a SQLite file under the state directory and a
private Redis server that `digits up` starts. Set `DIGITS_DATABASE_URL` and
`DIGITS_REDIS_URL` to point the same code at PostgreSQL and an external Redis.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The repository (or installed source tree) root: models/ ships beside the packages.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIGITS_", extra="ignore")

    # --- data and model -------------------------------------------------------
    data_dir: Path = Field(
        default=PROJECT_ROOT / "data" / "mnist",
        description="Directory holding the four MNIST IDX files (gzipped or not).",
    )
    allow_download: bool = Field(
        default=False,
        description="Download MNIST with torchvision when data_dir has no copy.",
    )
    model_path: Path = Field(
        default=PROJECT_ROOT / "models" / "digits-cnn.safetensors",
        description="The model artifact's weights; its metadata JSON sits beside it.",
    )
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N.")
    real_data_dir: Path = Field(
        default=PROJECT_ROOT / "data" / "real",
        description="Labelled real digits from other writers (zips with labels.csv), used "
                    "by training and calibration beside MNIST; skipped when absent.",
    )

    # --- local state, database, queue ----------------------------------------
    state_dir: Path = Field(
        default=Path("var"), description="Where the local stack keeps its SQLite file and Redis."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset means a SQLite file in state_dir."
    )
    redis_url: str | None = Field(
        default=None, description="Broker URL; unset means `digits up` starts a private Redis."
    )

    # --- batching (chosen by measurement: bench/) ----------------------------
    chunk_size: int = Field(default=256, ge=1, description="Images per queue message.")
    max_chunk_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024,
        description="Image bytes a worker holds at once: a chunk with more is read and "
                    "classified in runs of at most this much.")
    max_batch_size: int = Field(default=128, ge=1, description="Images per model forward pass.")
    torch_threads: int = Field(
        default=0, ge=0, description="Threads per worker process for the model (torch or "
                                     "ONNX Runtime); 0 lets the runtime decide.")
    string_looks: int = Field(
        default=5, ge=1, le=5,
        description="Looks the string network may take at a field: the strip as it is, "
                    "then, if a digit was read less than 0.99 sure, 0.9 and 1.1, 0.8 and "
                    "1.2 times as wide; the text most of them read wins (docs/strings.md: "
                    "+2 points on held-out real fields for 1.6-1.8x the time). 1: the "
                    "strip alone.")
    runtime: Literal["auto", "onnx-int8", "torch"] = Field(
        default="auto",
        description="What runs the CNN in a worker: auto takes the int8 ONNX model on a CPU "
                    "when it is beside the weights and intact (shared/runtime.py), else "
                    "torch fp32.")

    # --- API limits -----------------------------------------------------------
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024,
        description="A request's body (413 past it). The API reads its files one at a "
                    "time and stores them in runs of about 8 MiB, so a thread holds about "
                    "one run of images, not the request.")
    max_expanded_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024,
        description="Bytes that the zips of one request may expand to together, counted "
                    "from their directories before anything expands; past it the request "
                    "is a 413 and nothing of it is stored.")
    max_image_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    max_form_parts: int = Field(default=2000, ge=10)
    max_zip_members: int = Field(
        default=10_000, ge=1,
        description="Members that the zips of one request may hold together (clients "
                    "send at most 500 files a request); past it the request is a 413.")
    predict_timeout_s: float = Field(
        default=10.0, gt=0,
        description="How long POST /api/v1/predict waits for a lane worker (then 504).")
    api_processes: int = Field(default=2, ge=1, description="`digits api`'s gunicorn processes.")
    api_worker: Literal["gevent_pywsgi", "gevent", "gthread"] = Field(
        default="gevent_pywsgi",
        description="gunicorn's worker class for `digits api`: `gevent_pywsgi` and `gevent` "
                    "serve each connection on a greenlet of one event loop (a /predict "
                    "call waits on Redis without a thread), `gevent_pywsgi` through "
                    "gevent's own HTTP handler, which sends a response's headers and body "
                    "in one write (1.1x the images/s of `gevent` at 32 clients, p99 "
                    "42-45 ms against 54-79, bench/interactive.py); `gthread` a pool of "
                    "threads.")
    api_threads: int = Field(
        default=32, ge=1,
        description="Threads per API process with DIGITS_API_WORKER=gthread: each holds "
                    "one request, and a /predict call holds its thread while the lane "
                    "answers.")
    lane_processes: int = Field(
        default=1, ge=1,
        description="Processes of an interactive (lane) worker; each batches whatever "
                    "predictions wait (bench/interactive.py).")
    lane_gather_ms: float = Field(
        default=3.0, ge=0, le=50,
        description="While bulk chunks wait or are being worked, a lane process waits this long "
                    "after a prediction arrives for others to share its forward pass: "
                    "fewer, fuller batches leave the bulk job its share of the CPU "
                    "(bench/interactive.py); never when no bulk work runs. 0: never.")
    predict_max_images: int = Field(
        default=64, ge=1,
        description="Images one /predict call may send as `images` parts (answered in one "
                    "response); more go to /jobs.")
    predict_max_waiting: int = Field(
        default=256, ge=1,
        description="Predictions that may wait for a lane worker at once; past it "
                    "/predict answers 503 with Retry-After instead of queueing longer.")
    page_size: int = Field(default=100, ge=1, le=1000)

    # --- reliability -----------------------------------------------------------
    visibility_timeout_s: int = Field(default=600, ge=10)
    reconcile_after_s: int = Field(default=120, ge=1)
    reconcile_every_s: int = Field(default=30, ge=1)
    task_max_retries: int = Field(
        default=5, ge=0,
        description="Tries after the first for a chunk whose task raised (a locked or "
                    "unreachable database, a time limit), 1 s doubling to 60 s apart; "
                    "then its images fail with task_error.")
    lease_s: int = Field(
        default=420, ge=10,
        description="How long a delivered chunk may take (above the task's 360 s hard "
                    "limit); a pending image past it is queued again, backlog or not.")
    queue_deadline_s: int = Field(
        default=3600, ge=10,
        description="An image queued this long and never delivered is queued again, "
                    "backlog or not (its message may be lost).")
    open_job_expiry_minutes: float = Field(
        default=1440, gt=0,
        description="An open job that nobody adds images to or seals for this long is "
                    "sealed by the reconciler (expired_at says so): longer than a client "
                    "takes to resume.")
    failpoints: str = Field(
        default="",
        description="Faults to inject, for tests and drills only (off when empty): "
                    "comma-separated NAME=FILENAME-PART (shared/failpoints.py).")
    client_retry_minutes: float = Field(
        default=10.0, ge=0,
        description="How long `digits submit` and the other client commands keep retrying "
                    "one request through connection errors, 429 and 5xx answers (one outage) "
                    "before giving up; the job stays open and resumable.")

    # --- operations: metrics, logs, events (docs/operations.md) ---------------
    metrics: bool = Field(
        default=True,
        description="Prometheus metrics: API and workers write them, the API serves /metrics.")
    metrics_dir: Path | None = Field(
        default=None,
        description="prometheus-client's multiprocess folder, one per host; unset means "
                    "state_dir/metrics. Each service takes a fresh subfolder when it starts.")
    metrics_port: int = Field(
        default=0, ge=0, le=65535,
        description="A worker serves its own metrics on this port (0: off); for workers on "
                    "hosts that do not share the API's metrics folder.")
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics wants `Authorization: Bearer <token>`.")
    # --- limits (api/limits.py): 429 for an account, 503 for the whole service ----
    rate_limit: str = Field(
        default="100/second;3000/minute",
        description="Requests per account with a key (Flask-Limiter syntax, counted on "
                    "Redis); calls without a key on an open local stack are not counted.")
    predict_rate_limit: str = Field(
        default="2000/second", description="POST /api/v1/predict per account with a key.")
    max_pending_per_account: int = Field(
        default=1_000_000, ge=1,
        description="Images of one account that may wait at once (429 past it).")
    max_pending_images: int = Field(
        default=5_000_000, ge=1,
        description="Images that may wait at once in all (503 past it).")

    # --- retention (shared/retention.py; the scheduler, `digits reconcile --every`) --
    retention_days: float | None = Field(
        default=None, gt=0,
        description="Image bytes, thumbnails and model inputs go this many days after "
                    "their job ends (results stay); unset: kept.")
    results_retention_days: float | None = Field(
        default=None, gt=0,
        description="Whole jobs, results included, go this many days after they end; "
                    "unset: kept.")

    # --- security: API keys and accounts (shared/accounts.py, README: Security) --
    auth: Literal["auto", "open", "required"] = Field(
        default="auto",
        description="required: every API call needs a key (Bearer) or a signed-in page; "
                    "open: calls without a key act as the `local` account (one local user). "
                    "auto: open when `digits api` listens on loopback only, else required.")
    secret_key: SecretStr | None = Field(
        default=None,
        description="Keys API keys are hashed with (HMAC-SHA256) and session cookies signed "
                    "with; every API replica and `digits keys` need the same one. Unset: "
                    "made once and kept in state_dir/secret.key.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object a line, with request and job ids.")
    celery_events: bool = Field(
        default=False, description="Workers and senders emit Celery task events (Flower).")

    @field_validator("database_url", "redis_url", "metrics_dir", "metrics_token", "secret_key",
                     "retention_days", "results_retention_days", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.state_dir / 'digits.db').resolve()}"

    @property
    def effective_metrics_dir(self) -> Path:
        return (self.metrics_dir or self.state_dir / "metrics").resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing env."""
    return Settings()

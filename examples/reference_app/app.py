"""Reference MagFlow-style API: a FastAPI app instrumented to the stack's default metric contract.

It is test support and an example for API teams. The stack never deploys it. Run it with:

    MAGFLOW_API_METRICS_TOKEN=<token> uvicorn app:app --app-dir examples/reference_app --port 8000

Environment variables:
- MAGFLOW_API_METRICS_TOKEN (required): bearer token that `GET /metrics` requires.
- OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: OTLP/HTTP endpoint that receives
  traces, such as http://127.0.0.1:4318. With neither set, or OTEL_SDK_DISABLED=true, no trace is
  exported. The other standard OTEL_* variables (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
  OTEL_EXPORTER_OTLP_HEADERS, ...) apply as the OpenTelemetry SDK defines them.
"""

import asyncio
import hmac
import logging
import os
import time
from typing import Any, Awaitable, Callable, MutableMapping

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import PlatformCollector, ProcessCollector
from pydantic import BaseModel, Field
from starlette.routing import Match

TOKEN_VARIABLE = "MAGFLOW_API_METRICS_TOKEN"
SERVICE_NAME = "magflow-api"
# Requests to these paths are not counted: Prometheus' scrapes would dominate the request rate.
UNINSTRUMENTED_PATHS = frozenset({"/metrics"})
# Label of requests that match no route, so that scans of random URLs cannot create unbounded series.
UNMATCHED_ENDPOINT = "unmatched"

LABELS = ("method", "endpoint", "status_code")
SIZE_BUCKETS = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)

# uvicorn configures this logger at INFO level, so start-up messages appear next to its own.
logger = logging.getLogger("uvicorn.error")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class HttpMetrics:
    """The default metric contract: names and labels that the stack's rules and dashboards read."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.duration = Histogram(
            "http_server_duration_seconds", "Duration of HTTP requests.", LABELS, registry=registry
        )
        # prometheus_client appends `_total` to counters, so the exposed name is http_server_requests_total.
        self.requests = Counter("http_server_requests", "HTTP requests handled.", LABELS, registry=registry)
        self.request_size = Histogram(
            "http_server_request_size_bytes", "Size of HTTP request bodies.", LABELS, buckets=SIZE_BUCKETS, registry=registry
        )
        self.response_size = Histogram(
            "http_server_response_size_bytes", "Size of HTTP response bodies.", LABELS, buckets=SIZE_BUCKETS, registry=registry
        )
        # No status_code label: a request in flight has no status yet.
        self.active = Gauge(
            "http_server_active_requests", "HTTP requests in flight.", ("method", "endpoint"), registry=registry
        )


def route_template(app: Any, scope: Scope) -> str:
    """Return the path template of the route that `scope` matches, such as /orders/{order_id}."""
    partial = None
    for route in app.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route.path
        # A partial match is a known path with another method, which returns 405 under that path.
        if match == Match.PARTIAL and partial is None:
            partial = route.path
    return partial or UNMATCHED_ENDPOINT


class MetricsMiddleware:
    """ASGI middleware that records the metric contract and a server span for every request."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics):
        self.app = app
        self.metrics = metrics
        self.tracer = trace.get_tracer("reference_app")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNINSTRUMENTED_PATHS:
            await self.app(scope, receive, send)
            return

        method = scope["method"]
        endpoint = route_template(scope["app"], scope)
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        declared_size = headers.get("content-length")

        received_bytes = 0
        sent_bytes = 0
        status_code = 500

        async def counting_receive() -> Message:
            nonlocal received_bytes
            message = await receive()
            received_bytes += len(message.get("body", b""))
            return message

        async def recording_send(message: Message) -> None:
            nonlocal sent_bytes, status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
            await send(message)

        active = self.metrics.active.labels(method, endpoint)
        active.inc()
        start = time.perf_counter()
        context = propagate.extract(headers)
        with self.tracer.start_as_current_span(f"{method} {endpoint}", context=context, kind=SpanKind.SERVER) as span:
            try:
                await self.app(scope, counting_receive, recording_send)
            finally:
                elapsed = time.perf_counter() - start
                active.dec()

                # An exception that escapes the app becomes a 500 in Starlette's outer error handler.
                labels = (method, endpoint, str(status_code))
                self.metrics.duration.labels(*labels).observe(elapsed)
                self.metrics.requests.labels(*labels).inc()
                request_size = int(declared_size) if declared_size and declared_size.isdigit() else received_bytes
                self.metrics.request_size.labels(*labels).observe(request_size)
                self.metrics.response_size.labels(*labels).observe(sent_bytes)

                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", endpoint)
                span.set_attribute("url.path", scope["path"])
                span.set_attribute("http.response.status_code", status_code)
                if status_code >= 500:
                    span.set_status(Status(StatusCode.ERROR))


def configure_tracing() -> bool:
    """Install an OTLP/HTTP trace exporter when the standard OTEL_* variables name an endpoint.

    Returns whether traces are exported.
    """
    endpoint_set = any(os.environ.get(name) for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    if not endpoint_set or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False

    # Imported here, so that the app runs without the SDK's exporter when tracing is off.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES. The exporter reads the endpoint, headers and timeout.
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


class OrderIn(BaseModel):
    product_id: int = Field(gt=0)
    quantity: int = Field(gt=0, le=1000)


ORDERS: dict[int, dict[str, int]] = {1: {"id": 1, "product_id": 10, "quantity": 2}}
PRODUCTS = [{"id": 10, "name": "Steel sheet"}, {"id": 11, "name": "Copper wire"}]


def create_app(metrics_token: str, registry: CollectorRegistry | None = None) -> FastAPI:
    """Build the app. Raises ValueError when `metrics_token` is empty."""
    if not metrics_token:
        raise ValueError(f"{TOKEN_VARIABLE} is empty: set it to the bearer token that Prometheus sends to /metrics")

    if registry is None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    metrics = HttpMetrics(registry)

    app = FastAPI(title="MagFlow reference API")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    expected_authorization = f"Bearer {metrics_token}".encode()

    @app.get("/metrics", include_in_schema=False)
    def read_metrics(request: Request) -> Response:
        authorization = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(authorization, expected_authorization):
            client = request.client.host if request.client else "unknown"
            logger.warning("rejected GET /metrics from %s: missing or invalid bearer token", client)
            return JSONResponse({"detail": "missing or invalid bearer token"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    def read_health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/products")
    def list_products() -> list[dict[str, Any]]:
        return PRODUCTS

    @app.get("/orders")
    def list_orders() -> list[dict[str, int]]:
        return list(ORDERS.values())

    @app.post("/orders", status_code=201)
    def create_order(order: OrderIn) -> dict[str, int]:
        order_id = max(ORDERS, default=0) + 1
        ORDERS[order_id] = {"id": order_id, **order.model_dump()}
        return ORDERS[order_id]

    # Declared before /orders/{order_id}, which would otherwise match these paths.
    @app.get("/orders/fail")
    def fail_order() -> None:
        """Return 500 on purpose, so that tests can drive the 5xx error rate."""
        raise HTTPException(status_code=500, detail="injected failure")

    @app.get("/orders/slow")
    async def slow_order(seconds: float = 1.0) -> dict[str, float]:
        """Sleep `seconds` (at most 10) before responding, so that tests can drive the latency."""
        if not 0 <= seconds <= 10:
            raise HTTPException(status_code=422, detail=f"seconds={seconds} is outside 0..10: use a value from 0 to 10")
        await asyncio.sleep(seconds)
        return {"slept_seconds": seconds}

    @app.get("/orders/{order_id}")
    def read_order(order_id: int) -> dict[str, int]:
        if order_id not in ORDERS:
            raise HTTPException(status_code=404, detail=f"order {order_id} not found")
        return ORDERS[order_id]

    return app


def _app_from_environment() -> FastAPI:
    token = os.environ.get(TOKEN_VARIABLE, "")
    if not token:
        raise RuntimeError(f"{TOKEN_VARIABLE} is not set: set it to the bearer token that Prometheus sends to /metrics")
    tracing = configure_tracing()
    logger.info("reference app starting; OTLP trace export %s", "on" if tracing else "off (no OTEL_EXPORTER_OTLP_*ENDPOINT set)")
    return create_app(token)


app = _app_from_environment()

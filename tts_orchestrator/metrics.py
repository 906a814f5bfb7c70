"""Prometheus metrics of one API process, on a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tts_orchestrator.state.records import RecordUsage

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tts_requests", "Requests by endpoint and outcome", ["endpoint", "status"], registry=r
        )
        self.errors = Counter("tts_errors", "Errors returned, by type", ["type"], registry=r)
        self.latency = Histogram(
            "tts_request_seconds",
            "End-to-end request latency",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tts_time_to_first_token_seconds",
            "Time to first token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge("tts_requests_inflight", "Requests being served", registry=r)
        self.prompt_tokens = Counter(
            "tts_prompt_tokens", "Prompt tokens (all branches)", registry=r
        )
        self.completion_tokens = Counter(
            "tts_completion_tokens", "Generated tokens (all branches)", registry=r
        )
        self.reasoning_tokens = Counter(
            "tts_reasoning_tokens", "Generated tokens inside thinking (all branches)", registry=r
        )
        self.pruned_tokens = Counter(
            "tts_pruned_tokens",
            "Tokens spent by branches later pruned for low confidence (DeepConf)",
            registry=r,
        )
        self.branch_confidence = Histogram(
            "tts_branch_confidence",
            "Confidence vote weight of the branches of confidence requests",
            buckets=(0.25, 0.5, 1, 2, 4, 6, 8, 10, 12, 14, 16, 20),
            registry=r,
        )
        self.pruning_saved_tokens = Counter(
            "tts_pruning_saved_tokens_estimate",
            "Tokens pruning saved, estimated: each pruned branch's shortfall against the mean "
            "length of its request's finished branches",
            registry=r,
        )
        self.branches = Counter("tts_branches", "Branches started", registry=r)
        self.branches_aborted = Counter(
            "tts_branches_aborted", "Branches aborted, by reason", ["reason"], registry=r
        )
        self.interventions = Counter(
            "tts_interventions", "Abort-and-continue interventions, by rule", ["rule"], registry=r
        )
        self.early_stops = Counter(
            "tts_early_stops", "Early consensus stops, by rule", ["rule"], registry=r
        )
        self.mode_decisions = Counter(
            "tts_mode_decisions",
            "Thinking-mode decisions, by the mode that ran and the stage that chose it",
            ["mode", "stage"],
            registry=r,
        )

    def observe_request(
        self, endpoint: str, status: str, seconds: float, usage: RecordUsage
    ) -> None:
        self.requests.labels(endpoint, status).inc()
        self.latency.observe(seconds)
        self.prompt_tokens.inc(usage.prompt_tokens)
        self.completion_tokens.inc(usage.completion_tokens)
        self.reasoning_tokens.inc(usage.reasoning_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)

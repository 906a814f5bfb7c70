"""One error tree, raised anywhere inside and translated to HTTP only at the API edge.

TTSError
├── ConfigError                 invalid configuration (startup, CLI)
├── ModelFetchError             a catalog model cannot be installed or fails its checksum
├── RequestError (400)          malformed or invalid request
│   ├── PayloadTooLarge (413)
│   └── ModelNotFound (404)
├── RequestNotFound (404)       unknown request id
├── WorkerError (502)           a worker failed mid-request
├── NoWorkerAvailable (503)     no healthy worker for the pool
├── StateUnavailable (503)      Redis unreachable
└── DeadlineExceeded (504)      the request deadline passed
"""

from __future__ import annotations


class TTSError(Exception):
    status_code: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def headers(self) -> dict[str, str]:
        """HTTP headers the response must carry (``WWW-Authenticate``, ``Retry-After``)."""
        return {}


class ConfigError(TTSError):
    error_type = "config_error"


class ModelFetchError(TTSError):
    error_type = "model_fetch_error"


class RequestError(TTSError):
    status_code = 400
    error_type = "invalid_request_error"


class PayloadTooLarge(RequestError):
    status_code = 413


class ModelNotFound(RequestError):
    status_code = 404
    error_type = "not_found_error"


class RequestNotFound(TTSError):
    status_code = 404
    error_type = "not_found_error"


class WorkerError(TTSError):
    status_code = 502
    error_type = "worker_error"


class NoWorkerAvailable(TTSError):
    status_code = 503
    error_type = "service_unavailable"


class StateUnavailable(TTSError):
    status_code = 503
    error_type = "service_unavailable"


class DeadlineExceeded(TTSError):
    status_code = 504
    error_type = "timeout_error"

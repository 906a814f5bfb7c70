"""TrimR in the service: the live trimmer of a request's branches, the verifier service on Redis
Streams, and the `trim-replay` command."""

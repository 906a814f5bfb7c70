"""Pure policies of the orchestrator: worker profiles, latency and accuracy models, the
(pool, branches, thinking budget) allocator, and the fast / slow thinking router.

Imports only the standard library, numpy and pydantic, so everything here is unit-testable in
milliseconds and usable offline (e.g. by ``tts-orchestrator plan`` and ``router fit``).
"""

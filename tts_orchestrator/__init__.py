"""tts-orchestrator: one OpenAI-compatible reasoning endpoint with test-time scaling."""

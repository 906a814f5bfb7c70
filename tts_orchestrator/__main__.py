from tts_orchestrator.cli import app

app()

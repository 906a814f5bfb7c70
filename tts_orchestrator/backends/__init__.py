"""Inference workers behind one contract: llama.cpp, vLLM, any OpenAI server and the replay
engine, chat templates, and the launchers of managed worker processes."""

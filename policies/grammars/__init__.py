"""GBNF grammars the mode switches send to engines with grammar support (llama.cpp)."""

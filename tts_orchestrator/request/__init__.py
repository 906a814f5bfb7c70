"""One request's life: its plan, the branches fanned out, consensus, the stream, the record.

The orchestrator prepares a request (mode, plan, branches) into an immutable shape, runs its
branches on the pools, folds their events into a vote and an early-stop decision, trims
overthinking through the trim service, and writes the request record.
"""

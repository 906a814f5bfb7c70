"""The latency policy in the service: the planner, pool profiles (measured, live, stored) and
the `profile` / `plan` commands."""

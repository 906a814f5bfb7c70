"""Ray side of the pools: the pool actor (placement, health, load), worker processes, branch
tasks and the direct data path, with Ray applied where they are built."""

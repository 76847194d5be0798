"""What every service shares: the runner, the service registry, metrics, the move engine."""

"""The atomic movers: mpush (fan-out) and lpush (a pipe) share one engine (``engine``); with message
tracking on they also run the tracking monitor (``monitor``), which ``mpush monitor`` runs alone."""

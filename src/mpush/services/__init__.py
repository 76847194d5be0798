"""One small module per service. A service never imports another service."""

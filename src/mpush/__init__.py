"""mpush: small, stateless microservices that cooperate only through Redis.

The public API is deliberately small; services are run with the ``mpush`` command.
"""

from mpush.errors import ConfigError, FencedError, MpushError, RedisUnavailableError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "FencedError",
    "MpushError",
    "RedisUnavailableError",
    "__version__",
]

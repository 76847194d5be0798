"""The pipeline stages beside lpush: mbalance (the shortest queue), mdedupe (once per window) and
mthrottle (at most N per period). What they share beyond the stage loop is ``common``."""

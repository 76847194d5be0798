"""rcontrol: declared replicas, hosts and standby instances, reconciled from Redis.

``spec`` (the declarations) · ``state`` and ``store`` (the Redis side) · ``fence`` (the
controller's fenced steps) · ``plan`` (the reconcile rules) · ``controller`` · ``agent`` and
``instances`` (the processes of one host) · ``events`` · ``view``. See docs/rcontrol.md.
"""

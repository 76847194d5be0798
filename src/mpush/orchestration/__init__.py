"""Processes and releases: the supervisor, private redis-server processes, ndeploy's deploy
machinery and rcontrol. Nothing here imports a service: services are run as ``mpush <service>``
child processes."""

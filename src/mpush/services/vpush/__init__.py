"""vpush: the relay to a list on another Redis (``relay``: lease, claim, deliver, acknowledge) and
the service that checks the route and runs it (``service``)."""

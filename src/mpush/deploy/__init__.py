"""ndeploy's building blocks: the request, the deploy root on disk, and the git/venv/pip steps.

Nothing here knows about the service loop; ``mpush.services.ndeploy`` puts them together.
"""

"""ndeploy: the request, the deploy root on disk, the git/venv/pip steps (``deployer``), the
request queue, and the service loop that puts them together (``service``); ``requester`` is the
requesting side (``mpush ndeploy deploy``).
"""

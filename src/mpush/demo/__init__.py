"""``mpush demo``: the distributed web server (``web``), and the mpush fan-out walkthrough
(``fanout``)."""

from mpush.demo.web import run_demo

__all__ = ["run_demo"]

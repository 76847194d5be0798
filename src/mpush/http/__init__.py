"""The HTTP message contract and the pieces the h* services share (SPEC §4).

``Request``/``Response`` are the messages; ``HandlerLoop`` serves a queue of requests with a Python
function; ``Exchange`` sends requests and matches their responses (what hgateway waits on).
"""

from mpush.http.messages import VERSION, MessageError, Request, Response, error_response

__all__ = ["VERSION", "MessageError", "Request", "Response", "error_response"]

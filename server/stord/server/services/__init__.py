"""One servicer per proto service: validate the request, call a port, translate the result."""

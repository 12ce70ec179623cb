"""`python -m edge_runtime serve`: the HTTP service (server, service, options, page)."""

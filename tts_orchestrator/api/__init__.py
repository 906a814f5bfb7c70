"""The HTTP edge: app factory and lifespan, typed dependencies, routes, streaming, security
dependencies, and the only place errors become HTTP responses."""

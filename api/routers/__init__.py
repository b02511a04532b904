"""One router per audience; each endpoint authenticates, calls a service and returns a schema."""

"""The HTTP layer: flask-restx namespaces, thin over the registry and discovery."""

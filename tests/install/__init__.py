"""How a user installs eds-server, each way proved from a new empty venv; and the starts it refuses."""

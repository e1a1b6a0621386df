"""Building images from a Dockerfile: the parser (dockerfile.py, sans-IO)."""

"""The HTTP API: the QuartTrio app factory and its blueprints."""

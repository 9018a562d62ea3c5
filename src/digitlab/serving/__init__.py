"""A trained run as a service: the MLflow Model's code, the REST server, the draw-a-digit page."""

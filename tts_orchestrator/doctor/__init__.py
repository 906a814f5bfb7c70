"""`doctor`: checks a deployment (Redis, Ray, workers, models, speculation) and reports."""

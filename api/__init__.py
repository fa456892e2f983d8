"""The curated tweet store service (FastAPI). Never imports TensorFlow."""

"""What the API, posting, the scripts and the generator share: settings, logging, the tweet rule and
its file format, and the X client. Imports neither FastAPI, SQLAlchemy nor TensorFlow."""

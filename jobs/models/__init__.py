"""Keras model builders, one module per task family. Imported only inside a job."""

"""Build, load and save models as HF model directories."""

"""ILRe as a service: an OpenAI-compatible endpoint that remembers documents (``python -m ilre.serve``)."""

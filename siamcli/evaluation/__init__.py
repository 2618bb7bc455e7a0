"""Retrieval, classification and verification metrics (pure numpy/FAISS), reports and plots."""

"""Datasets: one interface (name -> frames + splits + metadata), manifests, downloads, caches, statistics."""

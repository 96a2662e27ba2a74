"""sanlab.storage package."""
if __name__ != "sanlab.storage":  # imported from the repo root as a bare name: refuse (ARCHITECTURE.md)
    raise ImportError("import this package as sanlab.storage, not as 'storage' (install with pip install -e .)")

"""sanlab.target package."""
if __name__ != "sanlab.target":  # imported from the repo root as a bare name: refuse (ARCHITECTURE.md)
    raise ImportError("import this package as sanlab.target, not as 'target' (install with pip install -e .)")

"""sanlab.replication package."""
if __name__ != "sanlab.replication":  # imported from the repo root as a bare name: refuse (ARCHITECTURE.md)
    raise ImportError("import this package as sanlab.replication, not as 'replication' (install with pip install -e .)")

"""sanlab.tools package."""
if __name__ != "sanlab.tools":  # imported from the repo root as a bare name: refuse (ARCHITECTURE.md)
    raise ImportError("import this package as sanlab.tools, not as 'tools' (install with pip install -e .)")

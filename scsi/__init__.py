"""sanlab.scsi package."""
if __name__ != "sanlab.scsi":  # imported from the repo root as a bare name: refuse (ARCHITECTURE.md)
    raise ImportError("import this package as sanlab.scsi, not as 'scsi' (install with pip install -e .)")

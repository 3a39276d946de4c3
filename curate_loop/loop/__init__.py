"""The active-learning loop: ``manifest.yml`` and one iteration of pull, embed, scan, curate, push."""

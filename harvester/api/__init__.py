"""``harvest serve``: the HTTP side of the harvester (health, metrics; signals later)."""

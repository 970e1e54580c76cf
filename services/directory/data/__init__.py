"""Reference data files (package data): Meeting Guide type codes, UK outward codes."""

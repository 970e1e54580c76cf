"""Contracts and plumbing shared by the FAMA services. No domain logic lives here."""

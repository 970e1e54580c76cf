"""Referrals: referrals and their lifecycle, consent, and a replica of meetings."""

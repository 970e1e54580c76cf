"""Notifications: reminder plans and messages, opt-outs, and a replica of meeting schedules."""

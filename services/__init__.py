"""The three FAMA services. None imports another; they share only ``shared``."""

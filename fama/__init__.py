"""The ``fama`` command line: composes each service's commands and the local runner."""

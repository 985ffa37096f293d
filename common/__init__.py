"""The ground floor: errors, atomic file writes and command-line glue.

It imports nothing from the project's other packages, so data/, models/, training/ and
evaluation/ may all import it.
"""
